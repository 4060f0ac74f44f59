"""One run's life on a GPU worker: pick up, execute, record outputs, finish.

The runner owns the run record's moves from ``started`` to a final status. The graph itself is
executed by a backend (the in-process executor here; a ComfyUI server in ``comfyq.comfyui``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from comfyq.catalog.validation import PromptValidationError
from comfyq.execution.executor import GraphError, NodeExecutionError
from comfyq.models import RunStatus
from comfyq.run_context import RunCancelled, RunContext
from comfyq.runs.hooks import RunHooks
from comfyq.runs.lease import LeaseLost, RunLease
from comfyq.runs.store import RunStore, now
from comfyq.settings import Settings
from comfyq.storage import OutputUploadFailed, RunFiles, output_storage

logger = logging.getLogger(__name__)

#: Record fields the runner needs to start a run.
RUN_FIELDS = ("workflow_api", "workflow_inputs", "gpu", "attempts", "webhook",
              "webhook_intermediate_status", "max_run_seconds")



#: Least time between two looks at a run's cancel flag while it executes.
CANCEL_CHECK_SECONDS = 0.1


class RunDeadlinePassed(RunCancelled):
    """The run went past its time limit; it ends ``timeout``."""


class GraphBackend(Protocol):
    """Executes an API graph for a run and returns each output node's ``ui`` dict."""

    def execute(self, graph: dict[str, Any], inputs: Mapping[str, Any] | None,
                context: RunContext,
                on_node_started: Callable[[str, str, int, int], None]) -> dict[str, dict]: ...


@dataclass
class WorkerIdentity:
    """Who executes: the Celery worker name and the device it is pinned to."""

    name: str
    device: str = "cpu"


@dataclass
class ActiveRun:
    """What the runner knows of the run it executes."""

    run_id: str
    record: dict[str, Any]
    lease: RunLease
    deadline: float

    @property
    def wants_intermediate(self) -> bool:
        return bool(self.record.get("webhook") and self.record.get("webhook_intermediate_status"))


class RunRunner:
    """Executes runs and keeps their records; one instance per worker process.

    :param store: the run records.
    :param settings: comfyq settings (output folders, limits, progress throttling).
    :param backend: what executes graphs.
    :param worker: this worker's identity, written into each run it executes.
    :param hooks: told of each change worth a webhook (only for runs with a webhook).
    """

    def __init__(self, store: RunStore, settings: Settings, backend: GraphBackend,
                 worker: WorkerIdentity, hooks: RunHooks) -> None:
        self.store = store
        self.settings = settings
        self.backend = backend
        self.worker = worker
        self.hooks = hooks
        self.storage = output_storage(settings)

    def run(self, run_id: str) -> RunStatus:
        """Execute ``run_id`` unless it is finished, cancelled or executing elsewhere.

        Returns the run's status when this worker is done with it.
        """
        ttl = self.settings.lease_ttl_seconds
        lease = RunLease(self.store.client, run_id, self.worker.name, ttl)
        started = now()
        claim = self.store.claim(run_id, RUN_FIELDS, lease.token, ttl, {
            "started_at": started, "worker": self.worker.name, "live_status": "Started"})
        status = RunStatus(claim.record["status"])
        if claim.outcome == "final":
            logger.info("run %s is already %s; not executing it again", run_id, status.value)
            return status
        if claim.outcome == "cancel":
            record = self.store.get_fields(run_id, HOOK_FIELDS)
            return self._finish(run_id, record, None, RunStatus.CANCELLED,
                                live_status="Cancelled before it started")
        if claim.outcome == "leased":
            logger.warning("run %s is executing under another worker's live lease; dropping "
                           "this delivery", run_id)
            return status
        lease.start_heartbeat()
        try:
            return self._run_claimed(run_id, claim.record, lease, started)
        except LeaseLost:
            logger.error("run %s: lease lost mid-run; leaving the run to its new worker", run_id)
            return self.store.status(run_id)
        finally:
            lease.release()

    def _run_claimed(self, run_id: str, record: dict[str, Any], lease: RunLease,
                     started: float) -> RunStatus:
        attempts = record["attempts"]
        if attempts > self.settings.max_attempts:
            return self._finish(run_id, record, lease, RunStatus.FAILED,
                                live_status="Failed: workers kept dying",
                                error=worker_lost_error(attempts - 1))
        limit = record.get("max_run_seconds") or self.settings.max_run_seconds
        active = ActiveRun(run_id, record, lease, started + limit)
        tell_hooks(self.hooks, record, run_id, final=False)
        return self._execute(active)

    def _execute(self, active: ActiveRun) -> RunStatus:
        run_id, record = active.run_id, active.record
        context = self._context(active)
        progress = ProgressWriter(
            self.store, run_id, active.lease.token, self.settings.progress_interval_seconds,
            self.hooks if active.wants_intermediate else None)
        context.report_progress = progress.node_progress
        context.report_cached = progress.nodes_cached

        def finish(status: RunStatus, **fields: Any) -> RunStatus:
            if context.blocked_nodes:
                fields["blocked_nodes"] = context.blocked_nodes
            return self._finish(run_id, record, active.lease, status,
                                **progress.node_fields(), **fields)

        try:
            ui_outputs = self.backend.execute(record["workflow_api"], record.get("workflow_inputs"),
                                              context, progress.node_started)
        except PromptValidationError as refused:
            return finish(RunStatus.FAILED, live_status="Failed: the graph was refused before it ran",
                          error={"exception_type": "PromptValidationError",
                                 "exception_message": str(refused),
                                 "node_errors": refused.node_errors})
        except RunDeadlinePassed as stopped:
            return finish(RunStatus.TIMEOUT, live_status="Timed out",
                          error=timeout_error(active, stopped))
        except RunCancelled as stopped:
            return finish(RunStatus.CANCELLED, live_status="Cancelled", **cancelled_error(stopped))
        except NodeExecutionError as error:
            logger.warning("run %s failed: %s", run_id, error)
            where = f"Failed at node {error.node_id}" if error.node_id else "Failed"
            return finish(RunStatus.FAILED,
                          live_status=f"{where}: {error.exception_message}"[:300],
                          error=error.as_dict())
        except GraphError as error:
            return finish(RunStatus.FAILED, live_status="Failed",
                          error={"exception_type": "GraphError", "exception_message": str(error)})
        active.lease.check()
        files = RunFiles(run_id, active.lease.token.rsplit(":", 1)[-1][:12], self.worker.name,
                         active.lease.check)
        try:
            outputs = [self._output_record(files, node_id, ui, record["workflow_api"])
                       for node_id, ui in ui_outputs.items()]
        except OutputUploadFailed as error:
            logger.error("run %s failed: %s", run_id, error)
            return finish(RunStatus.FAILED, live_status="Failed: outputs could not be stored",
                          error={"exception_type": "OutputUploadFailed",
                                 "exception_message": str(error)})
        return finish(RunStatus.SUCCESS, live_status="Done", outputs=outputs, progress=1.0)

    def _finish(self, run_id: str, record: dict[str, Any], lease: RunLease | None,
                status: RunStatus, **fields: Any) -> RunStatus:
        token = lease.token if lease else None
        if end_run(self.store, self.hooks, run_id, record, status, fields, lease_token=token):
            if lease is not None:
                lease.released = True
            return status
        logger.warning("run %s: ending it %s was refused: this worker no longer holds its lease "
                       "(another worker took the run over) or the run already ended", run_id,
                       status.value)
        return self.store.status(run_id)

    def _context(self, active: ActiveRun) -> RunContext:
        run_id = active.run_id
        # The claim itself just looked at the cancel flag.
        next_look = time.time() + CANCEL_CHECK_SECONDS

        def check_cancelled() -> None:
            nonlocal next_look
            active.lease.check()
            moment = time.time()
            if moment > active.deadline:
                raise RunDeadlinePassed(run_id)
            # Ask Redis at most every CANCEL_CHECK_SECONDS: short nodes do not each pay a round
            # trip, and a cancel still lands within that time plus the node it arrives in.
            if moment >= next_look:
                next_look = moment + CANCEL_CHECK_SECONDS
                if self.store.cancel_requested(run_id):
                    raise RunCancelled(run_id)

        return RunContext(
            run_id=run_id,
            output_dir=self.settings.output_dir / run_id,
            temp_dir=self.settings.data_dir.resolve() / "temp" / run_id,
            check_cancelled=check_cancelled,
            device=self.worker.device,
        )

    def _output_record(self, files: RunFiles, node_id: str, ui: dict[str, Any],
                       graph: Mapping[str, Any]) -> dict[str, Any]:
        stamp = datetime.now(UTC).isoformat()
        data = {kind: [self._media_item(files, item) if isinstance(item, dict) and "filename" in item
                       else item for item in items]
                for kind, items in ui.items()}
        return {
            "id": str(uuid.uuid4()), "run_id": files.run_id, "data": data,
            "node_meta": {"node_class": graph[node_id]["class_type"]},
            "created_at": stamp, "updated_at": stamp, "type": "output", "node_id": node_id,
        }

    def _media_item(self, files: RunFiles, item: dict[str, Any]) -> dict[str, Any]:
        """The record of one file, kept in the configured storage (uploaded, for S3)."""
        path = self.file_path(item)
        name = "/".join(part for part in (item.get("subfolder", ""), item["filename"]) if part)
        started = time.monotonic()
        url = self.storage.keep(files, path, name)
        return {
            "url": url, "type": item.get("type", "output"),
            "filename": item["filename"], "subfolder": item.get("subfolder", ""),
            "is_public": self.storage.is_public,
            "upload_duration": round(time.monotonic() - started, 6),
        }

    def file_path(self, item: Mapping[str, Any]) -> Path:
        """Where a file named in a node's ui lives on this worker's disk."""
        root = self.settings.output_dir if item.get("type", "output") == "output" else (
            self.settings.data_dir.resolve() / "temp")
        return root / item.get("subfolder", "") / item["filename"]


#: Record fields :func:`end_run` needs to tell the hooks.
HOOK_FIELDS = ("webhook", "webhook_intermediate_status")


def end_run(store: RunStore, hooks: RunHooks, run_id: str, record: Mapping[str, Any],
            status: RunStatus, fields: Mapping[str, Any], *, lease_token: str | None = None,
            only_from: tuple[RunStatus, ...] = ()) -> bool:
    """Move a run to its final ``status`` (with ``ended_at`` now unless given) and tell the
    hooks; whether it moved. ``lease_token`` fences the move and gives the lease back with it;
    ``record`` holds at least :data:`HOOK_FIELDS`."""
    fields = {"ended_at": now(), **fields}
    if store.move(run_id, status, fields, lease_token=lease_token, only_from=only_from) is None:
        return False
    tell_hooks(hooks, record, run_id, final=True)
    return True


def tell_hooks(hooks: RunHooks, record: Mapping[str, Any], run_id: str, final: bool) -> None:
    # Skip the outbox entirely (no Redis round trip) when nobody listens.
    if record.get("webhook") and (final or record.get("webhook_intermediate_status")):
        hooks.changed(run_id, True)


def worker_lost_error(attempts: int) -> dict[str, Any]:
    return {"exception_type": "WorkerLost",
            "exception_message": f"gave up after {attempts} attempt(s): the worker executing the "
                                 "run died or stopped answering each time"}


def timeout_error(active: ActiveRun, stopped: RunCancelled) -> dict[str, Any]:
    limit = active.record.get("max_run_seconds")
    message = (f"the run exceeded its time limit of {limit:g} s" if limit
               else "the run exceeded its time limit")
    return {"exception_type": "RunTimeout",
            "exception_message": "; ".join([message, *getattr(stopped, "__notes__", ())])}


def cancelled_error(stopped: RunCancelled) -> dict[str, Any]:
    """A cancelled run has no error, unless the backend noted how stopping it went (a server
    that did not stop the prompt)."""
    notes = getattr(stopped, "__notes__", ())
    if not notes:
        return {}
    return {"error": {"exception_type": "RunCancelled",
                      "exception_message": "; ".join(["the run was cancelled", *notes])}}


class ProgressWriter:
    """Turns node starts and in-node progress into throttled record updates.

    Progress is the share of nodes done, plus the current node's own share; ``live_status``
    names the node executing, as ComfyDeploy shows it ("Executing KSampler"). The first write
    also moves the run from ``started`` to ``running``.
    """

    def __init__(self, store: RunStore, run_id: str, lease_token: str, interval: float,
                 hooks: RunHooks | None) -> None:
        self.store = store
        self.run_id = run_id
        self.lease_token = lease_token
        self.interval = interval
        self.hooks = hooks
        self.total = 1
        self.index = 0
        self.class_type = ""
        self._running = False
        self._last_write = 0.0
        self.executed: list[str] = []
        self._executed_ids: set[str] = set()
        self.cached: list[str] = []

    def node_started(self, node_id: str, class_type: str, index: int, total: int) -> None:
        self.index, self.total, self.class_type = index, max(total, 1), class_type
        if node_id not in self._executed_ids:
            self._executed_ids.add(node_id)
            self.executed.append(node_id)
        self._write(self.index / self.total, f"Executing {class_type}")

    def nodes_cached(self, node_ids: list[str]) -> None:
        """The nodes the cache answers for this run, written at once (before any node runs)."""
        self.cached = list(node_ids)
        if self.cached:
            self._running = False  # not throttled: users see it as the run starts
            self._write(0.0, f"{len(self.cached)} node(s) from the cache")

    def node_fields(self) -> dict[str, Any]:
        """The record's ``executed_nodes`` and ``cached_nodes``."""
        return {"executed_nodes": self.executed, "cached_nodes": self.cached}

    def node_progress(self, value: float, maximum: float, node_id: str | None) -> None:
        share = (value / maximum) if maximum else 0.0
        self._write((self.index + share) / self.total,
                    f"Executing {self.class_type} ({value:g}/{maximum:g})")

    def _write(self, progress: float, live_status: str) -> None:
        moment = time.monotonic()
        if self._running and moment - self._last_write < self.interval:
            return
        self._last_write = moment
        status = None if self._running else RunStatus.RUNNING
        applied = self.store.move(self.run_id, status,
                                  {"progress": round(progress, 4), "live_status": live_status,
                                   "executed_nodes": self.executed, "cached_nodes": self.cached},
                                  lease_token=self.lease_token)
        self._running = True
        if applied and self.hooks:
            self.hooks.changed(self.run_id, status is not None)
