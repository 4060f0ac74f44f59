"""The one Celery application of comfyq's workers, beat and Flower.

``celery -A comfyq.tasks.app worker|beat|flower`` all load this module, so every process sees the
same queues and the same settings, all derived from ``comfyq.settings`` through
``comfyq.broker.celery_config``; this adds the task modules and beat's schedule.
"""

from __future__ import annotations

from celery import Celery

from comfyq.broker.celery_config import celery_config
from comfyq.scheduler.beat_schedule import beat_schedule
from comfyq.settings import Settings, get_settings

TASK_MODULES = [
    "comfyq.tasks.run",
    "comfyq.tasks.callbacks",
    "comfyq.tasks.maintenance",
    "comfyq.workers.presence",
]


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app with comfyq's tasks, configured from ``settings`` (the environment's)."""
    settings = settings or get_settings()
    app = Celery("comfyq", include=TASK_MODULES)
    # The maintenance beat runs (webhook retries due, reaping, expiry); see scheduler/.
    app.conf.update(celery_config(settings), beat_schedule=beat_schedule(settings))
    return app


celery_app = create_app()
app = celery_app
