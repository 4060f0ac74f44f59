"""Run leases: at most one worker executes a run at any time.

A worker takes a run's lease (a Redis key holding its token, with a TTL) before executing it and
renews it from a heartbeat thread while the run goes on. A redelivered message for a run whose
lease is alive is dropped; when a worker dies its lease expires, and the maintenance reaper hands
the run to another worker. Record writes of a run in progress are fenced by the token, so a worker
that lost its lease (paused too long, cut off) cannot overwrite what its successor writes.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid

import redis

from comfyq.redis import keys, scripts

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This worker no longer holds the run's lease: another worker may be executing it."""


class RunLease:
    """The lease of one run, held by this worker while it executes the run.

    The lease is taken atomically with the run's claim (``RunStore.claim``, with :attr:`token`);
    this object keeps it alive and gives it back.

    :param client: redis client (``decode_responses=True``).
    :param run_id: the run.
    :param worker_name: written into the token, so ``redis-cli GET`` shows who holds it.
    :param ttl_seconds: how long the lease lives without a heartbeat.
    """

    def __init__(self, client: redis.Redis, run_id: str, worker_name: str,
                 ttl_seconds: float) -> None:
        self.client = client
        self.run_id = run_id
        self.key = keys.run_lease(run_id)
        self.token = f"{worker_name}:{uuid.uuid4().hex}"
        self.ttl_ms = max(100, int(ttl_seconds * 1000))
        self._renew = scripts.LEASE_RENEW.on(client)
        self._release = scripts.LEASE_RELEASE.on(client)
        self._lost = threading.Event()
        self._keeper: LeaseKeeper | None = None
        #: Set once the run's final write gave the lease back (``RunStore.move`` does).
        self.released = False

    def start_heartbeat(self, keeper: LeaseKeeper | None = None) -> None:
        """Have ``keeper`` (this process's by default) renew the lease every third of its TTL
        until :meth:`release`."""
        self._keeper = keeper or process_lease_keeper()
        self._keeper.keep(self)

    def renew(self) -> bool:
        """Renew the lease once; False once it is lost (the keeper then stops renewing it)."""
        try:
            if not self._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
                logger.error("lease of run %s was lost; stopping its execution", self.run_id)
                self._lost.set()
                return False
        except redis.RedisError as error:
            # A blip must not kill the run; the lease outlives a few missed beats.
            logger.warning("could not renew lease of run %s: %s", self.run_id, error)
        return True

    def check(self) -> None:
        """Raise :class:`LeaseLost` once the heartbeat found the lease gone."""
        if self._lost.is_set():
            raise LeaseLost(self.run_id)

    def stop_heartbeat(self) -> None:
        if self._keeper is not None:
            self._keeper.drop(self)

    def release(self) -> None:
        """Stop the heartbeat and give the lease back (unless a final write already did)."""
        self.stop_heartbeat()
        if self.released:
            return
        try:
            self._release(keys=[self.key], args=[self.token])
        except redis.RedisError as error:
            logger.warning("could not release lease of run %s: %s", self.run_id, error)


class LeaseKeeper:
    """One thread that renews every lease a process holds, each every third of its TTL.

    A thread of its own per run would cost its start and join on every run (most of a
    millisecond on a busy host), on the path from a run's claim to its end.
    """

    def __init__(self) -> None:
        self._due: dict[RunLease, float] = {}
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def keep(self, lease: RunLease) -> None:
        with self._changed:
            self._due[lease] = time.monotonic() + lease.ttl_ms / 3000
            if self._thread is None or not self._thread.is_alive():
                # Also after a fork: the parent's thread does not run in the child.
                self._thread = threading.Thread(target=self._renew_forever,
                                                name="comfyq-lease-keeper", daemon=True)
                self._thread.start()
            self._changed.notify()

    def drop(self, lease: RunLease) -> None:
        with self._changed:
            self._due.pop(lease, None)

    def _renew_forever(self) -> None:
        while True:
            for lease in self._wait_for_due():
                kept = lease.renew()
                with self._changed:
                    if lease in self._due:
                        if kept:
                            self._due[lease] = time.monotonic() + lease.ttl_ms / 3000
                        else:
                            del self._due[lease]

    def _wait_for_due(self) -> list[RunLease]:
        with self._changed:
            while True:
                now = time.monotonic()
                due = [lease for lease, moment in self._due.items() if moment <= now]
                if due:
                    return due
                self._changed.wait(min(self._due.values(), default=now + 60) - now)


@functools.cache
def process_lease_keeper() -> LeaseKeeper:
    """The lease keeper of this process (made on first use, in the process that uses it)."""
    return LeaseKeeper()
