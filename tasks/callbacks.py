"""The result-callback task: one delivery attempt of one webhook event (CPU workers only)."""

from __future__ import annotations

from comfyq.broker import DELIVER_WEBHOOK_TASK
from comfyq.tasks.app import celery_app
from comfyq.workers.runtime import broker, redis_client


@celery_app.task(name=DELIVER_WEBHOOK_TASK)
def deliver_webhook(event_id: str) -> str:
    """Attempt delivery of ``event_id``; the outbox schedules any retry and releases the next
    event of the same run, which is handed on at once to keep per-run order without delay."""
    from comfyq.webhooks.outbox import deliver_event

    outcome = deliver_event(redis_client(), event_id)
    next_event = getattr(outcome, "next_event_id", None)
    if next_event:
        broker().send_webhook_delivery(next_event)
    return str(getattr(outcome, "state", outcome))
