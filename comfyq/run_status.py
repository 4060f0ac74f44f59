"""A run's lifecycle: ComfyDeploy's statuses, in the order a run moves through them.

Plain enums with no dependencies, so the command line can offer them as choices without
loading the request models.
"""

from __future__ import annotations

import enum


class RunStatus(str, enum.Enum):
    """ComfyDeploy's ``WorkflowRunStatus``, in the order a run moves through them."""

    NOT_STARTED = "not-started"
    QUEUED = "queued"
    STARTED = "started"
    RUNNING = "running"
    UPLOADING = "uploading"
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def rank(self) -> int:
        """Position in the lifecycle; a run only ever moves to a higher rank."""
        return STATUS_RANK[self]


FINAL_STATUSES = frozenset(
    {RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.CANCELLED}
)
#: All final statuses share the top rank: once final, nothing else applies.
FINAL_RANK = 9
STATUS_RANK = {
    RunStatus.NOT_STARTED: 0,
    RunStatus.QUEUED: 1,
    RunStatus.STARTED: 2,
    RunStatus.RUNNING: 3,
    RunStatus.UPLOADING: 4,
    **dict.fromkeys(FINAL_STATUSES, FINAL_RANK),
}
#: Statuses of a run a worker is executing.
EXECUTING = (RunStatus.STARTED, RunStatus.RUNNING, RunStatus.UPLOADING)
