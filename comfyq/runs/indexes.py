"""The indexes of run records, each owned here: which runs exist, wait, and execute.

- ``created`` (``keys.RUNS_INDEX``): every run id, scored by creation time (listing, retention);
- ``queued`` (``keys.QUEUED_RUNS``): runs waiting in a queue, scored by when they were queued
  (queue-wait timeouts, lost-message recovery);
- ``active`` (``keys.ACTIVE_RUNS``): runs a worker started and has not finished, scored by
  start time (the reaper's list of runs whose worker may have died).

The record's Lua scripts keep ``queued`` and ``active`` in step with each status change; what
they cannot know (a record that expired, a re-published message) is mended through here.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from comfyq.redis import keys


class RunIndexes:
    """Reads and mends the run indexes.

    :param client: a redis-py client created with ``decode_responses=True``.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def active(self) -> list[str]:
        """Runs a worker started and has not finished, oldest start first."""
        return self.client.zrange(keys.ACTIVE_RUNS, 0, -1)

    def queued(self, until: float | None = None) -> list[str]:
        """Runs waiting in a queue (since ``until`` at the latest), longest waiting first."""
        return self.client.zrangebyscore(keys.QUEUED_RUNS, "-inf",
                                         "+inf" if until is None else until)

    def queued_first(self, count: int) -> list[str]:
        """The ``count`` runs that have waited in a queue longest, longest first."""
        return self.client.zrange(keys.QUEUED_RUNS, 0, count - 1)

    def created(self, until: float) -> list[str]:
        """Runs created no later than ``until``, oldest first."""
        return self.client.zrangebyscore(keys.RUNS_INDEX, "-inf", until)

    def queued_again(self, run_id: str, moment: float) -> None:
        """``run_id`` waits in its queue again since ``moment`` (its message was re-published)."""
        self.client.zadd(keys.QUEUED_RUNS, {run_id: moment})

    def forget_active(self, run_id: str) -> None:
        self.client.zrem(keys.ACTIVE_RUNS, run_id)

    def forget_queued(self, run_id: str) -> None:
        self.client.zrem(keys.QUEUED_RUNS, run_id)

    def forget_created(self, run_ids: Iterable[str]) -> None:
        run_ids = list(run_ids)
        if run_ids:
            self.client.zrem(keys.RUNS_INDEX, *run_ids)
