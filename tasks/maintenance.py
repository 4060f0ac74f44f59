"""The periodic maintenance tasks that beat schedules (``scheduler.beat_schedule``) on the CPU
worker (beat hands out due webhook deliveries itself)."""

from __future__ import annotations

from comfyq.broker import names
from comfyq.scheduler import reaper
from comfyq.settings import get_settings
from comfyq.tasks.app import celery_app
from comfyq.workers.runtime import broker, run_hooks, run_store


@celery_app.task(name=names.REAP_RUNS_TASK)
def reap_runs() -> int:
    """Re-queue runs of dead workers, fail those out of attempts, time out overdue runs."""
    return reaper.reap_runs(run_store(), get_settings(), broker().publish_run, run_hooks())


@celery_app.task(name=names.RECOVER_LOST_MESSAGES_TASK)
def recover_lost_messages() -> int:
    """Re-publish queued runs whose broker message is gone."""
    return reaper.recover_lost_messages(run_store(), get_settings(), broker())


@celery_app.task(name=names.EXPIRE_OLD_RUNS_TASK)
def expire_old_runs() -> int:
    """Forget expired runs and delete their old output files."""
    return reaper.expire_old_runs(run_store(), get_settings())
