"""What beat schedules, and how often; read by the Celery app's configuration."""

from __future__ import annotations

from comfyq.routing import MAINTENANCE_QUEUE

#: Seconds between two scans of the webhook outbox for deliveries that are due.
WEBHOOK_DISPATCH_INTERVAL_SECONDS = 1.0

BEAT_SCHEDULE = {
    "dispatch-due-webhooks": {
        "task": "comfyq.dispatch_due_webhooks",
        "schedule": WEBHOOK_DISPATCH_INTERVAL_SECONDS,
        # A tick that waited longer than a few intervals is stale: the next one does its work.
        "options": {"queue": MAINTENANCE_QUEUE, "expires": WEBHOOK_DISPATCH_INTERVAL_SECONDS * 5},
    },
}
