"""Read runs and follow their changes without blocking the event loop (redis.asyncio).

Following a run listens on its pub/sub channel (``comfyq.keys.run_updates``), where every change
of the record is announced, and reads the record again after each announcement. The record is
read only once the subscription is confirmed, so no change between the two can be missed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import redis.asyncio as aioredis

from comfyq import keys
from comfyq.errors import RunNotFound
from comfyq.models import RunStatus, WorkflowRunModel
from comfyq.producer import run_model
from comfyq.runs import decode_record

#: Longest wait for Redis to confirm a subscription.
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
#: Record fields a snapshot reads.
SNAPSHOT_FIELDS = ("status", "live_status", "progress")


@dataclass(frozen=True)
class RunSnapshot:
    """The part of a run's record that changes while it runs."""

    run_id: str
    status: RunStatus
    live_status: str | None
    progress: float


class RunFollower:
    """Reads and follows runs.

    :param client: a redis.asyncio client of the run records (``decode_responses=True``).
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def get(self, run_id: str) -> WorkflowRunModel:
        """The run's whole record; raises RunNotFound."""
        raw = await self.client.hgetall(keys.run(run_id))
        if not raw:
            raise RunNotFound(run_id)
        return run_model(decode_record(raw))

    async def snapshot(self, run_id: str) -> RunSnapshot:
        status, live_status, progress = await self.client.hmget(keys.run(run_id), SNAPSHOT_FIELDS)
        if status is None:
            raise RunNotFound(run_id)
        return RunSnapshot(run_id, RunStatus(status),
                           None if live_status is None else json.loads(live_status),
                           0.0 if progress is None else float(json.loads(progress) or 0.0))

    async def watch(self, run_id: str, timeout: float,
                    idle_seconds: float) -> AsyncIterator[RunSnapshot | None]:
        """The run's snapshot now, then again after each change, until it is final.

        Yields None when nothing changed for ``idle_seconds`` (a chance to keep a connection
        alive). Stops after the final snapshot, or silently once ``timeout`` seconds passed.
        """
        deadline = anyio.current_time() + timeout
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(keys.run_updates(run_id))
            await _confirmed(pubsub)
            latest = await self.snapshot(run_id)
            yield latest
            while not latest.status.is_final:
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    return
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=min(remaining, idle_seconds))
                # Idle too, the record is read: a safety net for an announcement lost while the
                # subscription was being re-established.
                current = await self.snapshot(run_id)
                if current != latest:
                    latest = current
                    yield current
                elif message is None:
                    yield None
        finally:
            # Shielded: a stream whose client left is cancelled, and its connection must still
            # go back to the pool.
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()


async def _confirmed(pubsub: aioredis.client.PubSub) -> None:
    with anyio.fail_after(SUBSCRIBE_TIMEOUT_SECONDS):
        while True:
            message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_SECONDS)
            if message is not None and message["type"] == "subscribe":
                return
