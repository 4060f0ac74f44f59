"""Celery beat that runs the maintenance only while it holds a lock in Redis.

``comfyq worker`` starts a beat on every host for convenience; the lock makes exactly one of
them schedule at any time. The holder renews the lock on every tick; if it dies, another takes
over once the lock expires.

The holder also hands the webhook deliveries that are due to the callback workers on every
tick (about once a second) itself: as a scheduled task, that tick would be a message and three
INFO log lines (beat's, the worker's "received" and "succeeded") every second.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

import redis
from celery.beat import PersistentScheduler

from comfyq.broker import Broker
from comfyq.redis import keys, scripts
from comfyq.redis.connection import redis_client
from comfyq.settings import get_settings

logger = logging.getLogger(__name__)

#: Seconds the lock lives without renewal; a standby beat takes over at most this long after
#: the active one dies.
LOCK_TTL_SECONDS = 15
#: Longest sleep between ticks, so the lock is renewed well inside its TTL.
MAX_TICK_INTERVAL_SECONDS = 1.0


class BeatLock:
    """A lock owned by one beat process, identified by a token."""

    def __init__(self, client: redis.Redis, ttl_seconds: float = LOCK_TTL_SECONDS) -> None:
        self.client = client
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._script = scripts.BEAT_LOCK_HOLD.on(client)

    def hold(self) -> bool:
        """Take or renew the lock; True while this process holds it."""
        return bool(self._script(keys=[keys.BEAT_LOCK], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        if self.client.get(keys.BEAT_LOCK) == self.token:
            self.client.delete(keys.BEAT_LOCK)


class LockedScheduler(PersistentScheduler):
    """A persistent beat scheduler that only sends tasks while holding :class:`BeatLock`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.client = redis_client(get_settings().redis_url)
        self.lock = BeatLock(self.client)
        self._holding = False
        super().__init__(*args, **kwargs)
        self.broker = Broker(get_settings(), self.app)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            holding = self.lock.hold()
        except redis.RedisError as error:
            logger.warning("beat lock unavailable (%s); not scheduling", error)
            holding = False
        if holding != self._holding:
            logger.info("beat %s the maintenance lock", "took" if holding else "lost")
            self._holding = holding
        if not holding:
            return MAX_TICK_INTERVAL_SECONDS
        self.dispatch_due_webhooks()
        return min(super().tick(*args, **kwargs), MAX_TICK_INTERVAL_SECONDS)

    def dispatch_due_webhooks(self) -> int:
        """Hand every webhook delivery that is due to a callback worker; returns how many."""
        from comfyq.webhooks.outbox import enqueue_due

        try:
            return enqueue_due(self.client, time.time(), self.broker.send_webhook_delivery)
        except Exception as error:  # beat must go on; the deliveries stay due for the next tick
            logger.warning("could not hand out due webhook deliveries: %s", error)
            return 0

    def close(self) -> None:
        try:
            self.lock.release()
        except redis.RedisError:
            pass
        super().close()
