"""The outbox's state changes, each one a Lua script so that it is atomic in Redis.

Atomicity is what makes the outbox safe with many callers: two schedulers never claim the same
due event, a delivery finishing late never overwrites a newer attempt, and a run's next event is
released in the same step that settles the previous one.

An event's `state` moves through::

    waiting -> pending -> claimed -> delivering -> delivered
       (behind    (due at     (handed to   (one attempt  \\-> pending (retry) / dead / gone
       an earlier  next_at)    a task)      running)
       event)

Only a run's *active* event is ever pending, claimed or delivering; the others wait in the run's
queue (a sorted set by seq), which is how deliveries of one run stay in seq order, one at a time.

The scripts are the ``outbox_*.lua`` files of ``comfyq/redis/lua`` (each header says its KEYS and
ARGV); this module hands each one its keys. A script that follows a run's queue touches events
it only finds while it runs: it names those it lacks (``outbox_library.lua``) and is called again
with their keys declared, so that every key it touches comes in through KEYS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from comfyq.redis import keys
from comfyq.redis.scripts import (
    OUTBOX_CLAIM,
    OUTBOX_FINISH,
    OUTBOX_RECORD,
    OUTBOX_REDELIVER,
    OUTBOX_START,
    OUTBOX_UNCLAIM,
    LuaScript,
)

#: Calls of one script that may each find more events to declare; a run's queue only grows by
#: one event per recorded change, so more than a few means something is badly wrong.
DECLARE_ROUNDS = 50


class TooManyUndeclaredEvents(RuntimeError):
    """A script kept finding events its caller had not declared."""


def _declaring(client: redis.Redis, script: LuaScript, own_keys: Sequence[str],
               own_args: Sequence[Any], event_ids: Iterable[str] = ()) -> Any:
    """Run ``script``, declaring ``event_ids`` and then every event it answers it lacks."""
    declared = list(dict.fromkeys(event_ids))
    for _ in range(DECLARE_ROUNDS):
        reply = script.on(client)(keys=[*own_keys, *map(keys.webhook_event, declared)],
                                  args=[*own_args, *declared])
        if not (isinstance(reply, list) and reply[:1] == ["undeclared"]):
            return reply
        declared += [event_id for event_id in reply[1:] if event_id not in declared]
    raise TooManyUndeclaredEvents(f"{script.name}: still finds undeclared events after "
                                  f"{DECLARE_ROUNDS} calls")


def record(client: redis.Redis, run_id: str, event_id: str, args: Sequence[Any]) -> list:
    """``outbox_record.lua`` for a new event ``event_id`` of ``run_id``."""
    return _declaring(client, OUTBOX_RECORD, [
        keys.webhook_run(run_id), keys.webhook_run_queue(run_id), keys.WEBHOOKS_DUE,
        keys.WEBHOOKS_OUTSTANDING, keys.WEBHOOKS_GONE_URLS, keys.run(run_id),
        keys.webhook_event(event_id),
    ], [event_id, run_id, *args])


def start(client: redis.Redis, event_id: str, args: Sequence[Any]) -> list:
    """``outbox_start.lua`` for ``event_id``."""
    return OUTBOX_START.on(client)(keys=[
        keys.webhook_event(event_id), keys.WEBHOOKS_DUE, keys.WEBHOOKS_INFLIGHT,
        keys.WEBHOOKS_GONE_URLS,
    ], args=[event_id, *args])


def finish(client: redis.Redis, run_id: str, event_id: str, args: Sequence[Any]) -> list:
    """``outbox_finish.lua`` for the attempt at ``event_id`` of ``run_id``."""
    return _declaring(client, OUTBOX_FINISH, [
        keys.webhook_event(event_id), keys.webhook_run(run_id), keys.webhook_run_queue(run_id),
        keys.WEBHOOKS_DUE, keys.WEBHOOKS_INFLIGHT, keys.WEBHOOKS_OUTSTANDING,
        keys.WEBHOOKS_DELIVERED, keys.WEBHOOKS_DEAD, keys.webhook_run_dead(run_id),
        keys.webhook_run_attempts(run_id), keys.run(run_id), keys.WEBHOOKS_GONE_URLS,
        keys.WEBHOOK_METRICS,
    ], [event_id, *args])


@dataclass(frozen=True)
class ClaimRound:
    """What one call of :func:`claim` found (see ``outbox_claim.lua``)."""

    claimed: list[str]
    lost: list[str]
    lost_attempts: list[str]
    #: A whole batch was read from the due or the in-flight index: call again for more.
    more: bool


def claim(client: redis.Redis, now: float, claim_deadline: float, lease_deadline: float,
          limit: int) -> ClaimRound:
    """``outbox_claim.lua`` for up to ``limit`` due events and ``limit`` passed deadlines."""
    pipeline = client.pipeline(transaction=False)
    pipeline.zrangebyscore(keys.WEBHOOKS_DUE, "-inf", repr(now), start=0, num=limit)
    pipeline.zrangebyscore(keys.WEBHOOKS_INFLIGHT, "-inf", repr(now), start=0, num=limit)
    due, passed = pipeline.execute()
    candidates = list(dict.fromkeys([*due, *passed]))
    if not candidates:
        return ClaimRound([], [], [], False)
    claimed, lost, lost_attempts = OUTBOX_CLAIM.on(client)(
        keys=[keys.WEBHOOKS_DUE, keys.WEBHOOKS_INFLIGHT, *map(keys.webhook_event, candidates)],
        args=[repr(now), repr(claim_deadline), repr(lease_deadline), *candidates])
    return ClaimRound(claimed, lost, lost_attempts, limit in (len(due), len(passed)))


def unclaim(client: redis.Redis, event_id: str, now: float) -> int:
    """``outbox_unclaim.lua`` for ``event_id``."""
    return OUTBOX_UNCLAIM.on(client)(
        keys=[keys.webhook_event(event_id), keys.WEBHOOKS_INFLIGHT, keys.WEBHOOKS_DUE],
        args=[event_id, repr(now)])


def redeliver(client: redis.Redis, run_id: str, args: Sequence[Any]) -> int:
    """``outbox_redeliver.lua`` for ``run_id``; returns how many events were re-queued."""
    reply = _declaring(client, OUTBOX_REDELIVER, [
        keys.webhook_run_dead(run_id), keys.webhook_run_queue(run_id), keys.webhook_run(run_id),
        keys.WEBHOOKS_DUE, keys.WEBHOOKS_DEAD, keys.WEBHOOKS_OUTSTANDING,
        keys.WEBHOOKS_GONE_URLS, keys.run(run_id),
    ], args)
    return int(reply[1])
