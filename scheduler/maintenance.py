"""Periodic maintenance tasks, scheduled by beat (see ``BEAT_SCHEDULE``) on the CPU worker."""

from __future__ import annotations

import time

from comfyq.notifications import send_delivery
from comfyq.tasks.app import celery_app
from comfyq.workers.runtime import redis_client

@celery_app.task(name="comfyq.dispatch_due_webhooks")
def dispatch_due_webhooks() -> int:
    """Hand every webhook delivery that is due to a callback worker; returns how many."""
    from comfyq.webhooks.outbox import enqueue_due

    return enqueue_due(redis_client(), time.time(), send_delivery)
