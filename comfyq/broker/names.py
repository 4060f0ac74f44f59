"""The names comfyq's processes agree on: Celery queues and task names."""

from __future__ import annotations

#: Queue of the result-callback (webhook) tasks; served by CPU workers only.
CALLBACKS_QUEUE = "comfyq.callbacks"
#: Queue of the maintenance tasks that beat schedules; served by the CPU worker.
MAINTENANCE_QUEUE = "comfyq.maintenance"

#: The task a GPU worker executes: one run, by id (the request is in the run record).
EXECUTE_RUN_TASK = "comfyq.execute_run"
#: One delivery attempt of one webhook event (callback workers).
DELIVER_WEBHOOK_TASK = "comfyq.deliver_webhook"
#: The maintenance tasks beat schedules.
REAP_RUNS_TASK = "comfyq.reap_runs"
RECOVER_LOST_MESSAGES_TASK = "comfyq.recover_lost_messages"
EXPIRE_OLD_RUNS_TASK = "comfyq.expire_old_runs"


def gpu_queue(gpu_type: str) -> str:
    """The Celery queue that the workers of ``gpu_type`` consume."""
    return f"comfyq.gpu.{gpu_type}"
