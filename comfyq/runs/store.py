"""The run record in Redis: created by the producer, moved forward by workers, read by everyone.

A record is a Redis hash (``comfyq.redis.keys.run``). ``status`` is stored as plain text so
scripts can compare it; every other field is JSON. Status changes go through one Lua script
(``run_transition.lua``) so that they are atomic and only ever move forward: a finished run never
goes back to running, whatever order two workers' writes arrive in. Every change is announced on
the run's pub/sub channel, which is what ``wait`` listens to. Times come from the store's
``clock`` (``time.time`` unless the caller passes another, as tests do to let time pass).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from comfyq.errors import RunNotFound
from comfyq.models import RunStatus
from comfyq.redis import keys, scripts
from comfyq.runs.codec import decode_fields, decode_record, encode_fields
from comfyq.runs.indexes import RunIndexes


def now() -> float:
    """Timestamps are Unix seconds (float) in records; models turn them into datetimes."""
    return time.time()


def _script_keys(run_id: str) -> list[str]:
    return [keys.run(run_id), keys.run_updates(run_id), keys.run_lease(run_id),
            keys.ACTIVE_RUNS, keys.QUEUED_RUNS, keys.RUN_METRICS]


@dataclass(frozen=True)
class Claim:
    """What a worker's claim of a run found: ``outcome`` and the record's fields it read."""

    outcome: str
    record: dict[str, Any]

    @property
    def claimed(self) -> bool:
        return self.outcome == "claimed"


class RunStore:
    """Reads and writes run records.

    :param client: a redis-py client created with ``decode_responses=True``.
    :param retention_seconds: how long a final record is kept.
    :param clock: Unix seconds now; the time of every write and of the maintenance's cutoffs.
    """

    def __init__(self, client: redis.Redis, retention_seconds: float = 7 * 24 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.retention_seconds = retention_seconds
        self.clock = clock
        self.indexes = RunIndexes(client)
        self._transition = scripts.RUN_TRANSITION.on(client)
        self._claim = scripts.RUN_CLAIM.on(client)

    def create(self, run_id: str, status: RunStatus, fields: Mapping[str, Any],
               pipeline: redis.client.Pipeline | None = None) -> None:
        """Write a new record (in ``pipeline`` when given, so the caller can batch it)."""
        self.create_many(status, [(run_id, fields)], pipeline)

    def create_many(self, status: RunStatus, runs: Sequence[tuple[str, Mapping[str, Any]]],
                    pipeline: redis.client.Pipeline | None = None) -> None:
        """Write new records of ``status`` (run id, fields), with one write per index for all.

        A field whose value is None is not stored: an absent field reads as None, and a queued
        run's record is a third smaller without the empty ones (its graph decides the rest).
        """
        target = pipeline if pipeline is not None else self.client
        created_at: dict[str, float] = {}
        submitted: Counter[str] = Counter()
        for run_id, fields in runs:
            stored = {name: value for name, value in fields.items() if value is not None}
            target.hset(
                keys.run(run_id),
                mapping={"status": status.value, "rank": str(status.rank)}
                | dict(zip(*[iter(encode_fields(stored))] * 2)),
            )
            created_at[run_id] = fields.get("created_at", self.clock())
            submitted[fields.get("gpu") or "unknown"] += 1
        if not created_at:
            return
        target.zadd(keys.RUNS_INDEX, created_at)
        # Counted here as the scripts count the later changes (comfyq.metrics reads them).
        for gpu, count in submitted.items():
            target.hincrby(keys.RUN_METRICS, f"submitted|{gpu}", count)
        if status == RunStatus.QUEUED:
            target.zadd(keys.QUEUED_RUNS, created_at)

    def delete(self, run_id: str) -> None:
        """Remove a record entirely (used when a submit could not be enqueued)."""
        pipeline = self.client.pipeline()
        pipeline.delete(keys.run(run_id), keys.run_cancel(run_id))
        for index in (keys.RUNS_INDEX, keys.QUEUED_RUNS, keys.ACTIVE_RUNS):
            pipeline.zrem(index, run_id)
        pipeline.execute()

    def move(self, run_id: str, status: RunStatus | None, fields: Mapping[str, Any] | None = None,
             *, force: bool = False, lease_token: str | None = None,
             only_from: Iterable[RunStatus] = ()) -> RunStatus | None:
        """Move a run to ``status`` (None: keep it) and set ``fields``, if that moves it forward.

        ``updated_at`` is set on every applied change; a final status starts the retention clock.
        Returns the status the run had before, or None when the change was refused (run
        missing, final, not a forward move, or ``lease_token`` no longer holds the lease).
        ``force`` allows a move back to an earlier non-final status, for re-queueing;
        ``only_from`` applies the change only while the run has one of those statuses. A final
        move fenced by ``lease_token`` also releases that lease.
        """
        moment = self.clock()
        allowed = [status.value for status in only_from]
        args = [
            status.value if status else "",
            str(status.rank if status else 0),
            "1" if force else "0",
            lease_token or "",
            str(int(self.retention_seconds)),
            repr(moment),
            run_id,
            str(len(allowed)),
            *allowed,
            *encode_fields({"updated_at": moment, **(fields or {})}),
        ]
        previous = self._transition(keys=_script_keys(run_id), args=args)
        return RunStatus(previous) if previous else None

    def claim(self, run_id: str, names: Sequence[str], lease_token: str, lease_ttl: float,
              started_fields: Mapping[str, Any]) -> Claim:
        """A worker's claim of a run before executing it (``run_claim.lua``), in one round trip.

        On success the run is ``started``, leased to ``lease_token`` and its attempt counted,
        and ``started_fields`` are set.
        """
        moment = self.clock()
        args = [lease_token, str(max(100, int(lease_ttl * 1000))), str(int(self.retention_seconds)),
                repr(moment), run_id, str(len(names)), *names,
                *encode_fields({"updated_at": moment, **started_fields})]
        reply = self._claim(keys=[*_script_keys(run_id), keys.run_cancel(run_id)], args=args)
        outcome = reply[0]
        if outcome == "missing":
            raise RunNotFound(run_id)
        record = {"status": reply[1]}
        if outcome == "claimed":
            record.update(decode_fields(run_id, list(names), [reply[1], *reply[4:]]))
            # The count as the claim left it (a name read above was read before it counted).
            record["attempts"] = int(reply[3])
        return Claim(outcome, record)

    def get(self, run_id: str) -> dict[str, Any]:
        """The decoded record; raises :class:`RunNotFound` when there is none."""
        raw = self.client.hgetall(keys.run(run_id))
        if not raw:
            raise RunNotFound(run_id)
        return decode_record(raw)

    def get_fields(self, run_id: str, names: Iterable[str]) -> dict[str, Any]:
        """Some fields of a record (missing ones are None); raises RunNotFound if no record."""
        names = list(names)
        return decode_fields(run_id, names, self.client.hmget(keys.run(run_id), ["status", *names]))

    def executing_view(self, run_ids: Sequence[str], names: Iterable[str]
                       ) -> dict[str, tuple[dict[str, Any], bool] | None]:
        """For each run, some fields of its record and whether its lease is alive, in one round
        trip; None for a run whose record is gone."""
        names = list(names)
        pipeline = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipeline.hmget(keys.run(run_id), ["status", *names])
            pipeline.exists(keys.run_lease(run_id))
        replies = pipeline.execute()
        view: dict[str, tuple[dict[str, Any], bool] | None] = {}
        for run_id, values, leased in zip(run_ids, replies[::2], replies[1::2], strict=True):
            view[run_id] = None if values[0] is None else (
                decode_fields(run_id, names, values), bool(leased))
        return view

    def fields_of(self, run_ids: Sequence[str], names: Iterable[str]
                  ) -> dict[str, dict[str, Any] | None]:
        """Some fields of each run's record (with its status), in one round trip; None for a
        run whose record is gone."""
        names = list(names)
        pipeline = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipeline.hmget(keys.run(run_id), ["status", *names])
        return {run_id: None if values[0] is None else decode_fields(run_id, names, values)
                for run_id, values in zip(run_ids, pipeline.execute(), strict=True)}

    def exist(self, run_ids: Sequence[str]) -> list[bool]:
        """Whether each run still has a record, in one round trip."""
        pipeline = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipeline.exists(keys.run(run_id))
        return [bool(found) for found in pipeline.execute()]

    def status(self, run_id: str) -> RunStatus:
        value = self.client.hget(keys.run(run_id), "status")
        if value is None:
            raise RunNotFound(run_id)
        return RunStatus(value)

    def request_cancel(self, run_id: str, ttl_seconds: float) -> None:
        """Leave the cancel flag that workers check between nodes (it survives restarts)."""
        self.client.set(keys.run_cancel(run_id), "1", ex=max(1, int(ttl_seconds)))

    def cancel_requested(self, run_id: str) -> bool:
        return bool(self.client.exists(keys.run_cancel(run_id)))
