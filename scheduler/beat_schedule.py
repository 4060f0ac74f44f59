"""What beat schedules, and how often; read by the Celery app's configuration.

Due webhook deliveries are not here: beat's own tick hands them out (``scheduler.beat``).
"""

from __future__ import annotations

from comfyq.broker import names
from comfyq.broker.names import MAINTENANCE_QUEUE
from comfyq.settings import Settings

#: Seconds between two sweeps for expired records, stale index entries and old output files.
RETENTION_INTERVAL_SECONDS = 300.0


def _every(task: str, seconds: float) -> dict:
    # A tick that waited longer than a few intervals is stale: the next one does its work.
    return {"task": task, "schedule": seconds,
            "options": {"queue": MAINTENANCE_QUEUE, "expires": max(seconds * 5, 5.0)}}


def beat_schedule(settings: Settings) -> dict:
    """The maintenance beat runs, with intervals from ``settings``."""
    return {
        "reap-runs": _every(names.REAP_RUNS_TASK, settings.maintenance_interval_seconds),
        "recover-lost-messages": _every(names.RECOVER_LOST_MESSAGES_TASK,
                                        max(settings.lost_message_seconds / 2, 1.0)),
        "expire-old-runs": _every(names.EXPIRE_OLD_RUNS_TASK, RETENTION_INTERVAL_SECONDS),
    }
