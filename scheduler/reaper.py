"""The maintenance that keeps runs from being lost or stuck.

- **Dead workers**: a started run whose lease expired (its worker died or was cut off) goes back
  to its queue, until it has used ``max_attempts``; then it fails, saying why.
- **Time limits**: a run past its limit plus a grace period ends ``timeout`` even if its node
  never yields (the worker is told to stop through the cancel flag); a run that waited in its
  queue longer than ``max_queue_seconds`` ends ``timeout`` without running.
- **Lost messages**: a run recorded ``queued`` whose message is in neither its queue nor the
  broker's unacked set (a broker that lost data, a publish that failed half-way) is re-published.
- **Retention**: index entries of expired records and output files older than the retention go.

Each function takes what it needs and returns how many runs it acted on, so the Celery tasks in
``scheduler.maintenance`` stay thin and the logic is testable on its own.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import redis

from comfyq import keys
from comfyq.execution.runner import worker_lost_error
from comfyq.models import RunStatus
from comfyq.routing import gpu_queue
from comfyq.runs import RunStore, now
from comfyq.settings import Settings

logger = logging.getLogger(__name__)

#: kombu's Redis hash of delivered but unacknowledged messages (delivery tag -> message).
KOMBU_UNACKED_HASH = "unacked"
#: kombu's sorted set of the same delivery tags, scored by when they were delivered.
KOMBU_UNACKED_INDEX = "unacked_index"
#: Statuses of a run a worker is executing.
EXECUTING = (RunStatus.STARTED, RunStatus.RUNNING, RunStatus.UPLOADING)

Publish = Callable[[str, str], None]
Announce = Callable[[str, bool], None]


def reap_runs(store: RunStore, settings: Settings, publish: Publish, announce: Announce) -> int:
    """Re-queue or fail runs whose worker died; time out runs past their limits."""
    acted = _reap_executing(store, settings, publish, announce)
    return acted + _expire_queue_waits(store, settings, announce)


def _reap_executing(store: RunStore, settings: Settings, publish: Publish,
                    announce: Announce) -> int:
    active = store.client.zrange(keys.ACTIVE_RUNS, 0, -1)
    view = store.executing_view(active, ("started_at", "max_run_seconds", "attempts", "gpu",
                                         "worker"))
    acted = 0
    for run_id, seen in view.items():
        if seen is None:
            store.client.zrem(keys.ACTIVE_RUNS, run_id)
            continue
        record, leased = seen
        if RunStatus(record["status"]) not in EXECUTING:
            continue
        limit = record.get("max_run_seconds") or settings.max_run_seconds
        if now() > (record.get("started_at") or now()) + limit + settings.timeout_grace_seconds:
            acted += _time_out(store, settings, run_id, limit, announce)
        elif not leased:
            acted += _recover_dead_worker(store, settings, run_id, record, publish, announce)
    return acted


def _time_out(store: RunStore, settings: Settings, run_id: str, limit: float,
              announce: Announce) -> int:
    # Tell a worker that is still executing to stop; the record is final either way.
    store.request_cancel(run_id, settings.visibility_timeout_seconds)
    error = {"exception_type": "RunTimeout",
             "exception_message": f"the run exceeded its time limit of {limit:g} s and did not "
                                  f"stop within {settings.timeout_grace_seconds:g} s"}
    if store.move(run_id, RunStatus.TIMEOUT, {"ended_at": now(), "live_status": "Timed out",
                                               "error": error}, only_from=EXECUTING):
        logger.warning("run %s timed out (limit %g s)", run_id, limit)
        announce(run_id, True)
        return 1
    return 0


def _recover_dead_worker(store: RunStore, settings: Settings, run_id: str, record: dict,
                         publish: Publish, announce: Announce) -> int:
    attempts = record.get("attempts") or 0
    worker = record.get("worker") or "its worker"
    if attempts >= settings.max_attempts:
        moved = store.move(run_id, RunStatus.FAILED, {
            "ended_at": now(), "live_status": f"Failed: {worker} stopped answering",
            "error": worker_lost_error(attempts)}, only_from=EXECUTING)
        if moved:
            logger.error("run %s failed after %d attempts", run_id, attempts)
            announce(run_id, True)
        return int(moved is not None)
    moved = store.move(run_id, RunStatus.QUEUED, {
        "queued_at": now(), "live_status": f"Re-queued: {worker} stopped answering",
        "progress": 0.0}, force=True, only_from=EXECUTING)
    if moved:
        publish(run_id, record["gpu"])
        logger.warning("run %s re-queued after %s stopped answering (attempt %d of %d)",
                       run_id, worker, attempts, settings.max_attempts)
        announce(run_id, True)
    return int(moved is not None)


def _expire_queue_waits(store: RunStore, settings: Settings, announce: Announce) -> int:
    cutoff = now() - settings.max_queue_seconds
    acted = 0
    for run_id in store.client.zrangebyscore(keys.QUEUED_RUNS, "-inf", cutoff):
        error = {"exception_type": "QueueTimeout",
                 "exception_message": f"no worker picked the run up within "
                                      f"{settings.max_queue_seconds:g} s"}
        if store.move(run_id, RunStatus.TIMEOUT, {"ended_at": now(), "error": error,
                                                   "live_status": "Timed out in queue"},
                      only_from=(RunStatus.QUEUED,)):
            announce(run_id, True)
            acted += 1
        else:
            store.client.zrem(keys.QUEUED_RUNS, run_id)
    return acted


def message_run_ids(raw_messages: Iterable[str]) -> set[str]:
    """Task ids (= run ids) of kombu messages as the Redis transport stores them."""
    run_ids = set()
    for raw in raw_messages:
        try:
            message = json.loads(raw)
            if isinstance(message, list):  # unacked entries: [message, exchange, routing key]
                message = message[0]
            run_ids.add(message["headers"]["id"])
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return run_ids


def _held_recently(broker: redis.Redis, since: float) -> set[str]:
    """Run ids of messages a worker took (unacked) after ``since``.

    A worker takes one message at a time (prefetch 1, late acks) and claims it at once, so a
    run still ``queued`` whose message a worker took before ``since`` was abandoned: its
    worker died between taking the message and claiming the run. That message only comes
    back after the visibility timeout, so the run is treated as lost.
    """
    tags = broker.zrangebyscore(KOMBU_UNACKED_INDEX, since, "+inf")
    if not tags:
        return set()
    return message_run_ids(value for value in broker.hmget(KOMBU_UNACKED_HASH, tags) if value)


def recover_lost_messages(store: RunStore, settings: Settings, broker: redis.Redis,
                          publish: Publish) -> int:
    """Re-publish queued runs whose message the broker no longer holds for a live worker."""
    cutoff = now() - settings.lost_message_seconds
    suspects = store.client.zrangebyscore(keys.QUEUED_RUNS, "-inf", cutoff)
    if not suspects:
        return 0
    present = _held_recently(broker, cutoff)
    for gpu_type in settings.gpu_types:
        present |= message_run_ids(broker.lrange(gpu_queue(gpu_type), 0, -1))
    republished = 0
    for run_id in suspects:
        if run_id in present:
            continue
        try:
            record = store.get_fields(run_id, ("gpu",))
        except KeyError:
            continue
        if record["status"] == RunStatus.QUEUED.value:
            logger.warning("run %s is queued but its message is gone; re-publishing", run_id)
            store.move(run_id, None, {"queued_at": now()})
            store.client.zadd(keys.QUEUED_RUNS, {run_id: now()})
            publish(run_id, record["gpu"])
            republished += 1
    return republished


def expire_old_runs(store: RunStore, settings: Settings) -> int:
    """Drop index entries of expired records, and output folders older than the retention."""
    cutoff = now() - settings.run_retention_seconds
    client = store.client
    stale = [run_id for run_id in client.zrangebyscore(keys.RUNS_INDEX, "-inf", cutoff)
             if not client.exists(keys.run(run_id))]
    if stale:
        client.zrem(keys.RUNS_INDEX, *stale)
    for root in (settings.output_dir, settings.data_dir.resolve() / "temp"):
        for folder in _older_than(root, cutoff):
            shutil.rmtree(folder, ignore_errors=True)
    return len(stale)


def _older_than(root: Path, cutoff: float) -> list[Path]:
    if not root.is_dir():
        return []
    return [entry for entry in root.iterdir() if entry.is_dir() and entry.stat().st_mtime < cutoff]


