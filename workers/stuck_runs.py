"""A GPU worker stops the process of a run that does not stop when told to.

A run stops at its next node or progress report once it is cancelled or past its time limit. A
node that never reports (blocked in C code, a hung download) would keep its process, and the
GPU, until it returns. So each GPU worker's main process, which executes no run itself, watches
the run its pool process executes: when a cancel was seen ``COMFYQ_CANCEL_GRACE_SECONDS`` ago,
or the run's limit passed that long ago, and the pool process still executes the run, the
worker kills that process as Celery's ``revoke(terminate=True)`` does (SIGKILL; the message is
acknowledged, so the run is not delivered again; the pool forks a fresh process for the next
run) and ends the run ``cancelled`` or ``timeout`` itself, saying why, with its webhooks.

Celery's request state and its pool belong to the worker's event loop, so a timer on that loop
hands the watching thread what the pool executes and carries out its kills; the thread does the
Redis reads and writes, which must not stall the loop.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.signals import worker_ready, worker_shutdown

from comfyq.broker import EXECUTE_RUN_TASK, Broker
from comfyq.execution.runner import HOOK_FIELDS, end_run
from comfyq.models import RunStatus
from comfyq.redis import keys
from comfyq.redis.connection import redis_client
from comfyq.run_status import EXECUTING
from comfyq.runs.hooks import RunHooks
from comfyq.runs.store import RunStore
from comfyq.settings import Settings, get_settings
from comfyq.workers.runtime import hooks_of

logger = logging.getLogger(__name__)

#: How often the event loop hands over what executes, and the watcher looks at it.
LOOK_SECONDS = 0.25
#: Longest wait for a killed process to be gone before its run is ended anyway.
KILL_WAIT_SECONDS = 10.0

RECORD_FIELDS = ("started_at", "max_run_seconds", *HOOK_FIELDS)


@dataclass(frozen=True)
class Execution:
    """A run that a pool process executes now, and Celery's request for it."""

    run_id: str
    pid: int
    request: Any = field(compare=False, repr=False)


@dataclass
class KillOrder:
    """A kill the watcher asks of the event loop; ``sent`` once the loop sent the signal."""

    execution: Execution
    done: threading.Event = field(default_factory=threading.Event)
    sent: bool = False


def current_executions() -> tuple[Execution, ...]:
    """The runs this worker's pool executes now (on the event loop, which owns the state)."""
    from celery.worker import state

    return tuple(Execution(request.args[0], request.worker_pid, request)
                 for request in list(state.active_requests)
                 if request.name == EXECUTE_RUN_TASK and request.worker_pid)


class StuckRunWatcher:
    """Kills the pool process of a run still executing past its cancel or limit plus grace.

    :param store: the run records.
    :param hooks: told when a run it ends changed (webhooks).
    :param settings: the default time limit.
    :param worker_name: this Celery worker's name; its lease tokens start with it.
    :param grace_seconds: how long a run may take to stop before its process is killed.
    :param terminate: kills a request's pool process; called on the event loop.
    :param executions: the runs the pool executes now; called on the event loop.
    """

    def __init__(self, store: RunStore, hooks: RunHooks, settings: Settings, worker_name: str,
                 grace_seconds: float, terminate: Callable[[Any], None],
                 executions: Callable[[], tuple[Execution, ...]] = current_executions) -> None:
        self.store, self.hooks, self.settings = store, hooks, settings
        self.worker_name = worker_name
        self.grace_seconds = grace_seconds
        self._terminate = terminate
        self._executions = executions
        self._executing: tuple[Execution, ...] = ()
        self._orders: queue.SimpleQueue[KillOrder] = queue.SimpleQueue()
        self._cancel_seen: dict[Execution, float] = {}
        #: Executions already stopped, until the loop no longer reports them.
        self._stopped: set[Execution] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="comfyq-stuck-runs",
                                        daemon=True)

    # -- on the event loop ---------------------------------------------------------------------

    def on_loop(self) -> None:
        """Hand over what executes; carry out the kills asked for."""
        self._executing = self._executions()
        while True:
            try:
                order = self._orders.get_nowait()
            except queue.Empty:
                return
            if order.execution in self._executing:
                self._terminate(order.execution.request)
                order.sent = True
            order.done.set()

    # -- on the watching thread ----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        unreachable = False
        while not self._stop.wait(LOOK_SECONDS):
            try:
                self.look()
            except redis.RedisError as error:  # said once per outage, not every look
                if not unreachable:
                    logger.warning("cannot look at the runs this worker executes: %s", error)
                unreachable = True
                continue
            except Exception:  # nothing may end the watch
                logger.exception("could not look at the runs this worker executes")
            unreachable = False

    def look(self) -> None:
        """Stop each execution that is overdue."""
        executing = self._executing
        self._cancel_seen = {execution: seen for execution, seen in self._cancel_seen.items()
                             if execution in executing}
        self._stopped.intersection_update(executing)
        for execution in executing:
            if execution in self._stopped:
                continue
            record = self.store.fields_of([execution.run_id], RECORD_FIELDS)[execution.run_id]
            status = self._overdue(execution, record) if record else None
            if status is not None:
                self._stop_execution(execution, record, status)

    def _overdue(self, execution: Execution, record: dict[str, Any]) -> RunStatus | None:
        """``timeout`` or ``cancelled`` when the run should have stopped ``grace`` ago."""
        if record.get("started_at") is None:
            return None
        moment = self.store.clock()
        limit = record.get("max_run_seconds") or self.settings.max_run_seconds
        past_limit = moment - (record["started_at"] + limit)
        if past_limit >= self.grace_seconds and not RunStatus(record["status"]).is_final:
            return RunStatus.TIMEOUT
        if not self.store.cancel_requested(execution.run_id):
            return None
        seen = self._cancel_seen.setdefault(execution, moment)
        if moment - seen < self.grace_seconds:
            return None
        return RunStatus.TIMEOUT if past_limit > 0 else RunStatus.CANCELLED

    def _stop_execution(self, execution: Execution, record: dict[str, Any],
                        status: RunStatus) -> None:
        logger.warning("run %s did not stop within %g s of its %s; ending it and killing its "
                       "pool process (pid %d)", execution.run_id, self.grace_seconds,
                       "time limit" if status == RunStatus.TIMEOUT else "cancel", execution.pid)
        # The run ends before the kill: the pool forks the fresh process once the old one is
        # gone, and a fork taken while this thread is mid-way through Redis or a first import
        # would hand the child a lock it can never take.
        self._end(execution, record, status)
        self._stopped.add(execution)
        order = KillOrder(execution)
        self._orders.put(order)
        if not order.done.wait(KILL_WAIT_SECONDS) or not order.sent:
            logger.info("run %s: its execution ended by itself; nothing to kill",
                        execution.run_id)
        elif not wait_exited(execution.pid, KILL_WAIT_SECONDS):
            logger.error("pool process %d of run %s outlived SIGKILL for %g s (stuck in the "
                         "kernel?)", execution.pid, execution.run_id, KILL_WAIT_SECONDS)

    def _end(self, execution: Execution, record: dict[str, Any], status: RunStatus) -> None:
        run_id = execution.run_id
        holder = self.store.client.get(keys.run_lease(run_id))
        if holder is not None and not holder.startswith(f"{self.worker_name}:"):
            logger.warning("run %s is leased to another worker now; its record is theirs",
                           run_id)
            return
        if end_run(self.store, self.hooks, run_id, record, status,
                   stopped_fields(status, record, self.settings, self.grace_seconds,
                                  self.worker_name, execution.pid),
                   lease_token=holder, only_from=EXECUTING):
            logger.warning("run %s ended %s; its pool process is killed", run_id, status.value)


def stopped_fields(status: RunStatus, record: dict[str, Any], settings: Settings,
                   grace_seconds: float, worker_name: str, pid: int) -> dict[str, Any]:
    """What a run whose process was killed shows: its live status and why it ended."""
    stopped = (f"did not stop within {grace_seconds:g} s, so {worker_name} killed the process "
               f"executing it (pid {pid}); a fresh process takes the next run")
    if status == RunStatus.TIMEOUT:
        limit = record.get("max_run_seconds") or settings.max_run_seconds
        return {"live_status": "Timed out; process killed",
                "error": {"exception_type": "RunTimeout",
                          "exception_message": f"the run exceeded its time limit of {limit:g} s "
                                               f"and {stopped}"}}
    return {"live_status": "Cancelled; process killed",
            "error": {"exception_type": "RunCancelled",
                      "exception_message": f"the run was cancelled and {stopped}"}}


def wait_exited(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` is gone (or a zombie awaiting its parent) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not _exited(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except (OSError, IndexError):  # no /proc: ask the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return state in ("Z", "X")


# -- a GPU worker's main process starts and stops its watcher -----------------------------------


def build_watcher(worker_name: str, terminate: Callable[[Any], None]) -> StuckRunWatcher:
    """The watcher of this worker's main process, with Redis clients of its own. A run on a
    ComfyUI server first gets ComfyUI's interrupt grace: its pool process does not execute the
    graph, and stops (or restarts) the server itself within that grace."""
    settings = get_settings()
    client = redis_client(settings.redis_url)
    grace = settings.cancel_grace_seconds + (
        settings.comfyui_interrupt_grace_seconds if settings.comfyui_url else 0.0)
    return StuckRunWatcher(RunStore(client, settings.run_retention_seconds),
                           hooks_of(client, Broker(settings)), settings, worker_name, grace,
                           terminate)


_watcher: StuckRunWatcher | None = None


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Start watching in a GPU worker (CPU workers execute no runs)."""
    global _watcher
    if not os.environ.get("COMFYQ_WORKER_GPU_TYPE"):
        return
    consumer = sender
    if not isinstance(consumer.pool, PreforkPool):
        logger.warning("%s runs its tasks in a %s pool, which cannot kill a run's process: a "
                       "run whose node never reports holds it until the node returns",
                       consumer.hostname, type(consumer.pool).__module__)
        return
    _watcher = build_watcher(
        consumer.hostname,
        terminate=lambda request: request.terminate(consumer.pool, signal=signal.SIGKILL))
    consumer.timer.call_repeatedly(LOOK_SECONDS, _watcher.on_loop)
    _watcher.start()


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    if _watcher is not None:
        _watcher.stop()
