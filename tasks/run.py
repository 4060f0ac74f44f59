"""The task a GPU worker executes: one run, identified by its id (the request is in Redis).

Importing it also arms the worker's watch over runs that ignore their cancel or time limit
(``comfyq.workers.stuck_runs``, started when the worker is ready).
"""

from __future__ import annotations

from comfyq.broker import EXECUTE_RUN_TASK
from comfyq.tasks.app import celery_app
from comfyq.workers import runtime, stuck_runs  # noqa: F401 - stuck_runs connects its signals


@celery_app.task(name=EXECUTE_RUN_TASK, bind=True)
def execute_run(self, run_id: str) -> str:
    """Execute run ``run_id`` on this worker; returns the final status for Flower to show."""
    return runtime.runner(self.request.hostname).run(run_id).value
