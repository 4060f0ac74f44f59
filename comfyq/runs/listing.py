"""Recent runs, newest first, filtered by status and GPU type: for ``comfyq runs`` and the API.

The run index (``keys.RUNS_INDEX``) holds every run id scored by creation time; it is read
backwards a page at a time and only the fields a listing shows are fetched, so listing the
newest runs costs the same however many runs Redis keeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import redis

from comfyq.models import RunStatus
from comfyq.redis import keys
from comfyq.runs.codec import decode_value

#: Run ids read from the index per round trip.
PAGE_SIZE = 200
#: Record fields a listing shows (``status`` first: it is stored as plain text).
SUMMARY_FIELDS = ("status", "workflow_id", "gpu", "worker", "progress", "live_status",
                  "created_at", "queued_at", "started_at", "ended_at")


@dataclass(frozen=True)
class RunSummary:
    """One run as a listing shows it; times are Unix seconds."""

    id: str
    status: str
    workflow_id: str | None
    gpu: str | None
    worker: str | None
    progress: float
    live_status: str | None
    created_at: float | None
    queued_at: float | None
    started_at: float | None
    ended_at: float | None

    @property
    def queue_wait_seconds(self) -> float | None:
        """Time from (last) queueing to start; None until it started."""
        if self.queued_at is None or self.started_at is None:
            return None
        return max(0.0, self.started_at - self.queued_at)

    @property
    def run_seconds(self) -> float | None:
        """Time from start to end; None until it ended after starting."""
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"queue_wait_seconds": self.queue_wait_seconds,
                               "run_seconds": self.run_seconds}


def _summary(run_id: str, values: list[str | None]) -> RunSummary | None:
    if values[0] is None:
        return None  # the record expired; its index entry goes at the next maintenance
    fields = {name: decode_value(value)
              for name, value in zip(SUMMARY_FIELDS[1:], values[1:])}
    fields["progress"] = fields["progress"] or 0.0
    return RunSummary(id=run_id, status=values[0], **fields)


def _newest_first(client: redis.Redis) -> Iterator[RunSummary]:
    start = 0
    while True:
        run_ids = client.zrevrange(keys.RUNS_INDEX, start, start + PAGE_SIZE - 1)
        if not run_ids:
            return
        pipeline = client.pipeline(transaction=False)
        for run_id in run_ids:
            pipeline.hmget(keys.run(run_id), SUMMARY_FIELDS)
        for run_id, values in zip(run_ids, pipeline.execute()):
            summary = _summary(run_id, values)
            if summary is not None:
                yield summary
        start += PAGE_SIZE


def list_runs(client: redis.Redis, status: RunStatus | str | None = None,
              gpu: str | None = None, limit: int = 20) -> list[RunSummary]:
    """The newest ``limit`` runs with that ``status`` and ``gpu`` type (None: any), newest first.

    :param client: a redis-py client created with ``decode_responses=True``.
    :raises ValueError: ``status`` is not a run status, or ``limit`` is not positive.
    """
    if limit < 1:
        raise ValueError(f"limit: must be at least 1, got {limit}")
    wanted_status = None if status is None else RunStatus(status).value
    found: list[RunSummary] = []
    for summary in _newest_first(client):
        if wanted_status is not None and summary.status != wanted_status:
            continue
        if gpu is not None and summary.gpu != gpu:
            continue
        found.append(summary)
        if len(found) == limit:
            break
    return found
