"""The run record in Redis: created by the producer, moved forward by workers, read by everyone.

A record is a Redis hash (``comfyq.keys.run``). ``status`` is stored as plain text so scripts can
compare it; every other field is JSON. Status changes go through one Lua script so that they are
atomic and only ever move forward: a finished run never goes back to running, whatever order two
workers' writes arrive in. Every change is announced on the run's pub/sub channel, which is what
``wait`` listens to.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from comfyq import keys
from comfyq.errors import RunNotFound
from comfyq.models import FINAL_RANK, RunStatus

#: Applies a status change and/or field updates if the run is not final and the change moves
#: forward. ARGV: new status ('' = keep), its rank, 'force' to allow moving back to a lower
#: non-final rank (re-queueing after a worker died), then field/value pairs.
#: Returns the status the run had before, or false when nothing was applied.
_TRANSITION_LUA = f"""
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
local rank = tonumber(redis.call('HGET', KEYS[1], 'rank'))
if rank >= {FINAL_RANK} then return false end
local new_status, new_rank, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if new_status ~= '' then
  if new_rank <= rank and mode ~= 'force' then return false end
  redis.call('HSET', KEYS[1], 'status', new_status, 'rank', new_rank)
end
if #ARGV > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
redis.call('PUBLISH', KEYS[2], new_status)
return status
"""


def now() -> float:
    """Timestamps are Unix seconds (float) in records; models turn them into datetimes."""
    return time.time()


def encode_fields(fields: Mapping[str, Any]) -> list[str]:
    """Flatten ``fields`` into HSET's field/value list, JSON-encoding each value."""
    flat: list[str] = []
    for name, value in fields.items():
        flat.append(name)
        flat.append(json.dumps(value, separators=(",", ":")))
    return flat


def decode_record(raw: Mapping[str, str]) -> dict[str, Any]:
    """A record hash as read from Redis, with its JSON values decoded."""
    record: dict[str, Any] = {}
    for name, value in raw.items():
        record[name] = value if name == "status" else json.loads(value)
    return record


class RunStore:
    """Reads and writes run records.

    :param client: a redis-py client created with ``decode_responses=True``.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._transition = client.register_script(_TRANSITION_LUA)

    def create(self, run_id: str, status: RunStatus, fields: Mapping[str, Any],
               pipeline: redis.client.Pipeline | None = None) -> None:
        """Write a new record (in ``pipeline`` when given, so the caller can batch it)."""
        target = pipeline if pipeline is not None else self.client
        created = fields.get("created_at", now())
        target.hset(
            keys.run(run_id),
            mapping={"status": status.value, "rank": str(status.rank)}
            | dict(zip(*[iter(encode_fields(fields))] * 2)),
        )
        target.zadd(keys.RUNS_INDEX, {run_id: created})

    def delete(self, run_id: str) -> None:
        """Remove a record entirely (used when a submit could not be enqueued)."""
        pipeline = self.client.pipeline()
        pipeline.delete(keys.run(run_id), keys.run_cancel(run_id))
        pipeline.zrem(keys.RUNS_INDEX, run_id)
        pipeline.execute()

    def move(self, run_id: str, status: RunStatus | None, fields: Mapping[str, Any] | None = None,
             *, force: bool = False) -> RunStatus | None:
        """Move a run to ``status`` (None: keep it) and set ``fields``, if that moves it forward.

        ``updated_at`` is set on every applied change. Returns the status the run had before,
        or None when the change was refused (run missing, final, or not a forward move).
        ``force`` allows a move back to an earlier non-final status, for re-queueing.
        """
        values = {"updated_at": now(), **(fields or {})}
        args = [
            status.value if status else "",
            str(status.rank if status else 0),
            "force" if force else "",
            *encode_fields(values),
        ]
        previous = self._transition(keys=[keys.run(run_id), keys.run_updates(run_id)], args=args)
        return RunStatus(previous) if previous else None

    def get(self, run_id: str) -> dict[str, Any]:
        """The decoded record; raises :class:`RunNotFound` when there is none."""
        raw = self.client.hgetall(keys.run(run_id))
        if not raw:
            raise RunNotFound(run_id)
        return decode_record(raw)

    def get_fields(self, run_id: str, names: Iterable[str]) -> dict[str, Any]:
        """Some fields of a record (missing ones are None); raises RunNotFound if no record."""
        names = list(names)
        values = self.client.hmget(keys.run(run_id), ["status", *names])
        if values[0] is None:
            raise RunNotFound(run_id)
        record: dict[str, Any] = {"status": values[0]}
        for name, value in zip(names, values[1:]):
            record[name] = value if name == "status" or value is None else json.loads(value)
        return record

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
