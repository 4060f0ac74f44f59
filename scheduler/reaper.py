"""The maintenance that keeps runs from being lost or stuck.

- **Dead workers**: a started run whose lease expired (its worker died or was cut off) goes back
  to its queue, until it has used ``max_attempts``; then it fails, saying why.
- **Time limits**: a run past its limit plus a grace period ends ``timeout`` even if its node
  never yields (the worker is told to stop through the cancel flag); a run that waited in its
  queue longer than ``max_queue_seconds`` ends ``timeout`` without running.
- **Lost messages**: a run recorded ``queued`` whose message is in neither its queue nor the
  broker's unacked set (a broker that lost data, a publish that failed half-way) is re-published.
- **Retention**: index entries of expired records and output files older than the retention go;
  with S3 storage, a run's objects go with its record. Uploaded input files older than the
  retention go too.

Each function takes what it needs and returns how many runs it acted on, so the Celery tasks in
``tasks.maintenance`` stay thin and the logic is testable on its own. The time is the store's
``clock``, which tests replace to let time pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from comfyq.broker import Broker
from comfyq.broker.priorities import DEFAULT_PRIORITY
from comfyq.execution.runner import worker_lost_error
from comfyq.models import RunStatus
from comfyq.run_status import EXECUTING
from comfyq.runs.hooks import RunHooks
from comfyq.runs.store import RunStore
from comfyq.settings import Settings
from comfyq.storage import output_storage
from comfyq.storage.local import sweep_local_folders

logger = logging.getLogger(__name__)


#: Messages of a queue the lost-message recovery looks at: on RabbitMQ it takes each one for a
#: moment; runs of a queue holding more are left until it is shorter.
RECOVERY_SCAN = 10_000

#: ``Broker.publish_run``: run id, GPU type, priority.
Publish = Callable[[str, str, int], None]


def reap_runs(store: RunStore, settings: Settings, publish: Publish, hooks: RunHooks) -> int:
    """Re-queue or fail runs whose worker died; time out runs past their limits."""
    acted = _reap_executing(store, settings, publish, hooks)
    return acted + _expire_queue_waits(store, settings, hooks)


def _reap_executing(store: RunStore, settings: Settings, publish: Publish,
                    hooks: RunHooks) -> int:
    active = store.indexes.active()
    view = store.executing_view(active, ("started_at", "max_run_seconds", "attempts", "gpu",
                                         "worker", "priority"))
    acted = 0
    for run_id, seen in view.items():
        if seen is None:
            store.indexes.forget_active(run_id)
            continue
        record, leased = seen
        if RunStatus(record["status"]) not in EXECUTING:
            continue
        limit = record.get("max_run_seconds") or settings.max_run_seconds
        moment = store.clock()
        if moment > (record.get("started_at") or moment) + limit + settings.timeout_grace_seconds:
            acted += _time_out(store, settings, run_id, limit, hooks)
        elif not leased:
            acted += _recover_dead_worker(store, settings, run_id, record, publish, hooks)
    return acted


def _time_out(store: RunStore, settings: Settings, run_id: str, limit: float,
              hooks: RunHooks) -> int:
    # Tell a worker that is still executing to stop; the record is final either way.
    store.request_cancel(run_id, settings.visibility_timeout_seconds)
    error = {"exception_type": "RunTimeout",
             "exception_message": f"the run exceeded its time limit of {limit:g} s and did not "
                                  f"stop within {settings.timeout_grace_seconds:g} s"}
    if store.move(run_id, RunStatus.TIMEOUT, {"ended_at": store.clock(),
                                               "live_status": "Timed out", "error": error},
                  only_from=EXECUTING):
        logger.warning("run %s timed out (limit %g s)", run_id, limit)
        hooks.changed(run_id, True)
        return 1
    return 0


def _recover_dead_worker(store: RunStore, settings: Settings, run_id: str, record: dict,
                         publish: Publish, hooks: RunHooks) -> int:
    attempts = record.get("attempts") or 0
    worker = record.get("worker") or "its worker"
    if attempts >= settings.max_attempts:
        moved = store.move(run_id, RunStatus.FAILED, {
            "ended_at": store.clock(), "live_status": f"Failed: {worker} stopped answering",
            "error": worker_lost_error(attempts)}, only_from=EXECUTING)
        if moved:
            logger.error("run %s failed after %d attempts", run_id, attempts)
            hooks.changed(run_id, True)
        return int(moved is not None)
    moved = store.move(run_id, RunStatus.QUEUED, {
        "queued_at": store.clock(), "live_status": f"Re-queued: {worker} stopped answering",
        "progress": 0.0}, force=True, only_from=EXECUTING)
    if moved:
        publish(run_id, record["gpu"], record.get("priority") or DEFAULT_PRIORITY)
        logger.warning("run %s re-queued after %s stopped answering (attempt %d of %d)",
                       run_id, worker, attempts, settings.max_attempts)
        hooks.changed(run_id, True)
    return int(moved is not None)


def _expire_queue_waits(store: RunStore, settings: Settings, hooks: RunHooks) -> int:
    cutoff = store.clock() - settings.max_queue_seconds
    acted = 0
    for run_id in store.indexes.queued(until=cutoff):
        error = {"exception_type": "QueueTimeout",
                 "exception_message": f"no worker picked the run up within "
                                      f"{settings.max_queue_seconds:g} s"}
        if store.move(run_id, RunStatus.TIMEOUT, {"ended_at": store.clock(), "error": error,
                                                   "live_status": "Timed out in queue"},
                      only_from=(RunStatus.QUEUED,)):
            hooks.changed(run_id, True)
            acted += 1
        else:
            store.indexes.forget_queued(run_id)
    return acted


def recover_lost_messages(store: RunStore, settings: Settings, broker: Broker) -> int:
    """Re-publish queued runs whose message the broker no longer holds for a live worker.

    A worker takes one message at a time (prefetch 1, late acks) and claims it at once, so a
    run still ``queued`` whose message a worker took before the cutoff was abandoned: its
    worker died between taking the message and claiming the run. On Redis that message only
    comes back after the visibility timeout, so the run is treated as lost; RabbitMQ gives it
    back to the queue when the worker's connection closes, where this finds it. A run re-published
    while its message was on its way to a worker has two messages; the second is dropped.
    """
    cutoff = store.clock() - settings.lost_message_seconds
    suspects = store.indexes.queued(until=cutoff)
    if not suspects:
        return 0
    present = broker.held_run_ids(cutoff)
    unsure = set()
    for gpu_type in settings.gpu_types:
        count, run_ids = broker.waiting(gpu_type, oldest=RECOVERY_SCAN)
        present.update(run_ids)
        if count > RECOVERY_SCAN:  # a message beyond the scan may be a suspect's
            unsure.add(gpu_type)
    republished = 0
    for run_id in suspects:
        if run_id in present:
            continue
        try:
            record = store.get_fields(run_id, ("gpu", "priority"))
        except KeyError:
            continue
        if record["status"] == RunStatus.QUEUED.value and record["gpu"] not in unsure:
            logger.warning("run %s is queued but its message is gone; re-publishing", run_id)
            moment = store.clock()
            store.move(run_id, None, {"queued_at": moment})
            store.indexes.queued_again(run_id, moment)
            broker.publish_run(run_id, record["gpu"], record.get("priority") or DEFAULT_PRIORITY)
            republished += 1
    return republished


def expire_old_runs(store: RunStore, settings: Settings) -> int:
    """Drop the stored files and index entries of expired records, and output folders older
    than the retention."""
    cutoff = store.clock() - settings.run_retention_seconds
    created = store.indexes.created(until=cutoff)
    stale = [run_id for run_id, exists in zip(created, store.exist(created)) if not exists]
    storage = output_storage(settings)
    try:
        storage.delete_runs(stale)
    except Exception as error:  # storage unreachable: the index keeps them for the next pass
        logger.warning("could not delete the stored files of %d expired run(s): %s",
                       len(stale), error)
        stale = []
    store.indexes.forget_created(stale)
    try:
        storage.delete_uploads_before(cutoff)
    except Exception as error:  # storage unreachable: the next pass tries again
        logger.warning("could not delete old uploaded files: %s", error)
    sweep_local_folders(settings, cutoff)
    return len(stale)


