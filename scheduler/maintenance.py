"""The periodic maintenance tasks that beat schedules (``scheduler.schedule``) on the CPU worker."""

from __future__ import annotations

import functools
import time

import redis

from comfyq.notifications import Announcer, send_delivery
from comfyq.producer import publish_run
from comfyq.scheduler import reaper
from comfyq.settings import get_settings
from comfyq.tasks.app import celery_app
from comfyq.workers.runtime import redis_client, run_store


def _publish(run_id: str, gpu_type: str) -> None:
    publish_run(celery_app, run_id, gpu_type)


@functools.cache
def _broker_client() -> redis.Redis:
    return redis.Redis.from_url(get_settings().effective_broker_url, decode_responses=True)


@celery_app.task(name="comfyq.dispatch_due_webhooks")
def dispatch_due_webhooks() -> int:
    """Hand every webhook delivery that is due to a callback worker; returns how many."""
    from comfyq.webhooks.outbox import enqueue_due

    return enqueue_due(redis_client(), time.time(), send_delivery)


@celery_app.task(name="comfyq.reap_runs")
def reap_runs() -> int:
    """Re-queue runs of dead workers, fail those out of attempts, time out overdue runs."""
    return reaper.reap_runs(run_store(), get_settings(), _publish,
                            Announcer(redis_client()).announce)


@celery_app.task(name="comfyq.recover_lost_messages")
def recover_lost_messages() -> int:
    """Re-publish queued runs whose broker message is gone."""
    return reaper.recover_lost_messages(run_store(), get_settings(), _broker_client(), _publish)


@celery_app.task(name="comfyq.expire_old_runs")
def expire_old_runs() -> int:
    """Forget expired runs and delete their old output files."""
    return reaper.expire_old_runs(run_store(), get_settings())
