"""What each GPU type's queue holds and who serves it, read from the broker and Redis.

The broker's own view (:class:`comfyq.broker.Broker`) sees every queue, including ones that no
online worker consumes (which Flower's queue view misses), and needs no answer from any worker.

A queue's depth counts the runs still waiting, not its messages: the message of a run cancelled
while queued (or a second message of one run, re-published) stays in the list until a worker
takes and drops it. Telling them apart needs each message's run record, so the depth is exact
for the oldest ``SCAN_WINDOW`` messages of a queue; beyond them, every message counts (a
longer queue costs no more to read).

On RabbitMQ, where looking at a queue's messages means taking them for a moment, the waiting runs
come from comfyq's own index of queued runs instead (``RunIndexes.queued_first``): exact for the
``SCAN_WINDOW`` runs that waited longest, the broker's count of ready messages beyond them.

Workers come from their presence keys (``comfyq.worker_presence``); the run a worker executes
is the member of ``ACTIVE_RUNS`` whose record names it in its ``worker`` field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from comfyq.broker import Broker, gpu_queue
from comfyq.models import RunStatus
from comfyq.runs.store import RunStore, now
from comfyq.worker_presence import online_workers

#: Messages of a queue, from its oldest end, whose runs are looked up (per priority list).
SCAN_WINDOW = 1000


@dataclass(frozen=True)
class WaitingRun:
    """The oldest run still waiting in a queue."""

    run_id: str
    queued_at: float
    age_seconds: float


@dataclass(frozen=True)
class Waiting:
    """The runs waiting in one queue: how many, and which has waited longest."""

    depth: int
    oldest: WaitingRun | None


def waiting_runs(broker: Broker, store: RunStore, gpu_type: str,
                 moment: float | None = None) -> Waiting:
    """How many runs wait in ``gpu_type``'s queue, and the one that has waited longest."""
    moment = now() if moment is None else moment
    messages, candidates = broker.waiting(gpu_type, oldest=SCAN_WINDOW)
    seen = store.fields_of(list(dict.fromkeys(candidates)), ("queued_at",))
    still_waiting = {run_id: record["queued_at"] for run_id, record in seen.items()
                     if record and record["status"] == RunStatus.QUEUED.value}
    stale = len(candidates) - len(still_waiting)  # ended runs' messages, and second messages
    queued_times = {run_id: at for run_id, at in still_waiting.items() if at is not None}
    oldest = min(queued_times, key=queued_times.__getitem__, default=None)
    if oldest is None:
        return Waiting(messages - stale, None)
    queued_at = queued_times[oldest]
    return Waiting(messages - stale, WaitingRun(oldest, queued_at, round(moment - queued_at, 3)))


def queued_by_gpu(store: RunStore) -> tuple[dict[str, dict[str, float]], bool]:
    """GPU type -> {run id: queued at} of the runs still queued among the ``SCAN_WINDOW``
    that have waited longest (from the index, not the broker), and whether the window held all."""
    candidates = store.indexes.queued_first(SCAN_WINDOW)
    seen = store.fields_of(candidates, ("gpu", "queued_at"))
    by_gpu: dict[str, dict[str, float]] = {}
    for run_id, record in seen.items():
        if record and record["status"] == RunStatus.QUEUED.value and record["gpu"]:
            by_gpu.setdefault(record["gpu"], {})[run_id] = record["queued_at"] or 0.0
    return by_gpu, len(candidates) < SCAN_WINDOW


def indexed_waiting(broker: Broker, queued: dict[str, float], complete: bool, gpu_type: str,
                    moment: float) -> Waiting:
    """Like :func:`waiting_runs`, from the queued runs of ``queued_by_gpu``; the depth is the
    broker's count of ready messages when the window did not hold every queued run. The broker
    is asked either way, so a broker that does not answer is reported, not hidden."""
    ready = broker.queue_depth(gpu_type)
    depth = len(queued) if complete else max(len(queued), ready)
    oldest = min(queued, key=queued.__getitem__, default=None)
    if oldest is None:
        return Waiting(depth, None)
    return Waiting(depth, WaitingRun(oldest, queued[oldest], round(moment - queued[oldest], 3)))


def current_runs(store: RunStore) -> dict[str, str]:
    """Worker name -> the run it is executing, from the runs started and not finished."""
    seen = store.fields_of(store.indexes.active(), ("worker",))
    return {record["worker"]: run_id for run_id, record in seen.items()
            if record and record["worker"]}


@dataclass(frozen=True)
class WorkerState:
    """An online worker of a GPU type, the device it is pinned to and the run it executes."""

    name: str
    device: str
    cuda_visible_devices: str | None
    host: str | None
    current_run: str | None


@dataclass(frozen=True)
class QueueState:
    """One GPU type's queue and the workers that serve it."""

    gpu_type: str
    queue: str
    depth: int
    oldest_waiting: WaitingRun | None
    workers: list[WorkerState] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gpu_types(configured: Iterable[str], workers: Sequence[dict[str, Any]]) -> list[str]:
    """The configured GPU types, then any type an online worker serves beyond them."""
    types = list(dict.fromkeys(configured))
    types += sorted({w["gpu_type"] for w in workers if w.get("gpu_type")} - set(types))
    return types


def _worker_state(worker: dict[str, Any], executing: dict[str, str]) -> WorkerState:
    return WorkerState(worker["name"], worker.get("device") or "cpu",
                       worker.get("cuda_visible_devices"), worker.get("host"),
                       executing.get(worker["name"]))


def queue_states(records: redis.Redis, broker: Broker, gpu_types: Iterable[str],
                 moment: float | None = None) -> list[QueueState]:
    """Every GPU type's queue depth, oldest waiting run and online workers.

    :param records: client of the Redis holding run records (``decode_responses=True``).
    :param broker: the broker holding the queues.
    """
    moment = now() if moment is None else moment
    store = RunStore(records)
    workers = online_workers(records)
    executing = current_runs(store)
    indexed = queued_by_gpu(store) if broker.lists_by_taking else None
    states = []
    for gpu_type in _gpu_types(gpu_types, workers):
        serving = [_worker_state(w, executing) for w in workers if w.get("gpu_type") == gpu_type]
        if indexed is None:
            waiting = waiting_runs(broker, store, gpu_type, moment)
        else:
            by_gpu, complete = indexed
            waiting = indexed_waiting(broker, by_gpu.get(gpu_type, {}), complete, gpu_type, moment)
        states.append(QueueState(gpu_type, gpu_queue(gpu_type), waiting.depth, waiting.oldest,
                                 serving))
    return states
