"""Following a run: every change of its record is announced on its pub/sub channel
(:func:`comfyq.redis.keys.run_updates`) with the new status, or '' when only fields changed.

A follower subscribes first and reads the record after, so no change between the two is missed.
:class:`RunChanges` serves blocking code (``Client.wait``, the CLI's progress bar);
:class:`RunFollower` serves the event loop (the API's sync and stream endpoints).
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis

from comfyq.errors import RunNotFound
from comfyq.models import RunStatus, WorkflowRunModel
from comfyq.redis import keys
from comfyq.runs.codec import decode_record, decode_value, run_model

#: Longest wait for Redis to confirm a subscription.
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
#: Record fields a snapshot reads.
SNAPSHOT_FIELDS = ("status", "live_status", "progress")


class RunChanges:
    """The announcements of one run's changes, from the moment the ``with`` block starts.

    :param client: a client of the run records (``decode_responses=True``).
    :param pubsub: a subscriber connection to reuse (:func:`subscriber_of_this_thread`); it
        is left subscribed to nothing afterwards. A connection of its own by default, closed
        afterwards.
    """

    def __init__(self, client: redis.Redis, run_id: str, pubsub: Any = None) -> None:
        self.client = client
        self.run_id = run_id
        self.channel = keys.run_updates(run_id)
        self._given = pubsub
        self._pubsub: Any = None

    def __enter__(self) -> RunChanges:
        self._pubsub = self._given or self.client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(self.channel)
        return self

    def __exit__(self, *_: object) -> None:
        if self._given is None:
            self._pubsub.close()
        else:
            self._pubsub.unsubscribe(self.channel)

    def wait(self, timeout: float) -> str | None:
        """The next announcement (a status, or '' for a change of fields only), or None when
        none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(timeout=remaining)
            if message is None:
                return None
            # A reused connection may still deliver a message of the run it followed before.
            if message["channel"] == self.channel:
                return message["data"]
        return None


def subscriber_of_this_thread(client: redis.Redis, threads: threading.local) -> Any:
    """A pub/sub connection of ``client`` kept in ``threads`` for the calling thread, so a
    thread that waits for run after run does not open a connection for each."""
    pubsub = getattr(threads, "pubsub", None)
    if pubsub is None:
        pubsub = threads.pubsub = client.pubsub(ignore_subscribe_messages=True)
    return pubsub


@dataclass(frozen=True)
class RunSnapshot:
    """The part of a run's record that changes while it runs."""

    run_id: str
    status: RunStatus
    live_status: str | None
    progress: float


class RunFollower:
    """Reads and follows runs without blocking the event loop.

    :param client: a redis.asyncio client of the run records (``decode_responses=True``).
    """

    def __init__(self, client: Any) -> None:
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
        return RunSnapshot(run_id, RunStatus(status), decode_value(live_status),
                           float(decode_value(progress) or 0.0))

    async def watch(self, run_id: str, timeout: float,
                    idle_seconds: float) -> AsyncIterator[RunSnapshot | None]:
        """The run's snapshot now, then again after each change, until it is final.

        Yields None when nothing changed for ``idle_seconds`` (a chance to keep a connection
        alive). Stops after the final snapshot, or silently once ``timeout`` seconds passed.
        """
        import anyio  # the event loop's library; only async callers have it

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


async def _confirmed(pubsub: Any) -> None:
    import anyio

    with anyio.fail_after(SUBSCRIBE_TIMEOUT_SECONDS):
        while True:
            message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_SECONDS)
            if message is not None and message["type"] == "subscribe":
                return
