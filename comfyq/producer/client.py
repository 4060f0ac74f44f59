"""Submitting and following runs from application code.

``Client`` is the API; the module-level ``submit``/``get_run``/``wait``/``cancel`` use a default
client built from the ``COMFYQ_`` environment, so most code needs only ``import comfyq``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from comfyq.broker import Broker, gpu_queue
from comfyq.deployments.registry import Deployments
from comfyq.deployments.shapes import DeploymentRunRequest, parse_request
from comfyq.errors import (
    ComfyqError,
    DeploymentNotFound,
    FieldProblem,
    InvalidRunRequest,
    SubmitFailed,
    WaitTimeout,
)
from comfyq.models import (
    DEFAULT_RUN_PRIORITY,
    FINAL_STATUSES,
    RunStatus,
    WorkflowRunModel,
    WorkflowRunRequest,
    parse_run_request,
)
from comfyq.producer.gpu_choice import resolve_gpu
from comfyq.producer.graph_check import check_run_graph
from comfyq.redis import keys
from comfyq.redis.connection import redis_client
from comfyq.runs.codec import run_model
from comfyq.runs.follow import RunChanges, subscriber_of_this_thread
from comfyq.runs.store import RunStore, now
from comfyq.settings import Settings, get_settings
from comfyq.webhooks.events import webhook_hooks
from comfyq.webhooks.safety import UnsafeWebhookURL, check_webhook_url
from comfyq.webhooks.settings import WebhookSettings, get_webhook_settings

FINAL_STATUS_VALUES = frozenset(status.value for status in FINAL_STATUSES)


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewRun:
    """A checked request about to be recorded: its run id, GPU type and first record fields;
    ``announce`` when its webhook wants the queued status too."""

    run_id: str
    gpu_type: str
    fields: dict[str, Any]
    announce: bool


@dataclass(frozen=True)
class SubmitOutcome:
    """One request's answer in :meth:`Client.submit_many`: its run id, or why it was refused
    (:class:`InvalidRunRequest`, :class:`UnknownGpuType`, :class:`PromptValidationError` or
    :class:`SubmitFailed`)."""

    run_id: str | None
    error: ComfyqError | None = None


@dataclass(frozen=True)
class CancelResult:
    """What ``cancel`` did: ``cancelled`` is False when the run had already finished."""

    run_id: str
    cancelled: bool
    status: RunStatus
    message: str


class Client:
    """Submit runs and follow them.

    :param settings: comfyq settings; the environment's by default.
    :param celery_app: the Celery app to publish with; a publish-only app of ``settings`` by
        default.
    :param redis_client: a client for run records (``decode_responses=True``).
    :param webhook_settings: which webhook addresses are allowed; the environment's by default.

    ``deployments`` (:class:`~comfyq.deployments.registry.Deployments`) deploys workflows and
    reads deployments; ``submit_deployment`` runs one.
    """

    def __init__(self, settings: Settings | None = None, celery_app: Celery | None = None,
                 redis_client: redis.Redis | None = None,
                 webhook_settings: WebhookSettings | None = None) -> None:
        self.settings = settings or get_settings()
        self.broker = Broker(self.settings, celery_app)
        self.celery_app = self.broker.celery_app
        # Writes here are idempotent: ride out a Redis outage of COMFYQ_OUTAGE_RETRY_SECONDS.
        self.redis = redis_client or _records_client(self.settings)
        self.store = RunStore(self.redis, self.settings.run_retention_seconds)
        self.webhook_settings = webhook_settings or get_webhook_settings()
        self.hooks = webhook_hooks(self.redis, self.broker.send_webhook_delivery,
                                   self.webhook_settings)
        self.deployments = Deployments(self.redis, self.settings.machines)
        # Each thread that waits keeps one subscriber connection for all the runs it waits on.
        self._subscribers = threading.local()

    # -- submitting ----------------------------------------------------------------------------

    def submit(self, request: WorkflowRunRequest | dict[str, Any] | str | bytes,
               idempotency_key: str | None = None) -> str:
        """Validate, record and enqueue a run; returns its run id.

        :param request: a :class:`WorkflowRunRequest`, or the same as a dict or JSON text.
        :param idempotency_key: submitting again with the same key (within the retention
            period) returns the first run's id and queues nothing new.
        :raises InvalidRunRequest: the request is malformed (every problem, with its field).
        :raises UnknownGpuType: no configured queue serves the GPU type it needs.
        :raises PromptValidationError: that GPU type's workers cannot run the graph (ComfyUI's
            ``error`` + ``node_errors`` in ``body``); see :mod:`comfyq.producer.graph_check`.
        :raises SubmitFailed: the broker could not be reached; nothing was recorded.
        """
        return self._enqueue(parse_run_request(request, self.deployed_workflow), idempotency_key)

    def submit_deployment(self, request: DeploymentRunRequest | dict[str, Any] | str | bytes,
                          idempotency_key: str | None = None) -> str:
        """Run the current version of a deployment (see :mod:`comfyq.deployments`); returns the
        run id. The run is recorded with the deployment's id and version and the workflow
        version it runs; the rest is as :meth:`submit`.

        :param request: a :class:`DeploymentRunRequest` (``deployment_id``, ``inputs``,
            ``webhook``, ``webhook_intermediate_status``, ``gpu``), or the same as a dict or JSON.
        :raises DeploymentNotFound: no deployment has that id (an :class:`InvalidRunRequest`
            naming ``deployment_id``).
        :raises InvalidRunRequest: the request is malformed (every problem, with its field).
        """
        request = parse_request(DeploymentRunRequest, request, "run request")
        resolved = self.deployments.resolve(request.deployment_id)
        if resolved is None:
            raise DeploymentNotFound(request.deployment_id)
        deployment = resolved.deployment
        run_request = parse_run_request({
            **request.model_dump(exclude={"deployment_id"}, exclude_none=True),
            "workflow_id": deployment.workflow_id, "workflow_api_json": resolved.graph,
            "machine_id": deployment.machine_id or None})
        return self._enqueue(run_request, idempotency_key, {
            "deployment_id": deployment.id, "deployment_version": deployment.version,
            "workflow_version_id": deployment.workflow_version_id})

    def submit_many(self, requests: Sequence[WorkflowRunRequest | dict[str, Any] | str | bytes],
                    ) -> list[SubmitOutcome]:
        """Validate, record and enqueue many runs at once; one answer per request, in order.

        Each request is checked on its own: a bad one gets its error and the others are queued
        all the same. The valid ones are recorded and enqueued together, in one round trip to
        Redis when Redis is also the broker.
        """
        outcomes: list[SubmitOutcome | None] = [None] * len(requests)
        new_runs: list[tuple[int, NewRun]] = []
        for index, request in enumerate(requests):
            try:
                new_runs.append((index, self._new_run(parse_run_request(
                    request, self.deployed_workflow))))
            except ComfyqError as error:
                outcomes[index] = SubmitOutcome(None, error)
        errors = self._record_and_publish([run for _, run in new_runs])
        for (index, run), error in zip(new_runs, errors, strict=True):
            outcomes[index] = SubmitOutcome(None if error else run.run_id, error)
        return outcomes

    def _enqueue(self, request: WorkflowRunRequest, idempotency_key: str | None,
                 deployment_fields: dict[str, Any] | None = None) -> str:
        """Check, record and publish a parsed request; ``deployment_fields`` join its record."""
        run = self._new_run(request, deployment_fields)
        if idempotency_key is not None:
            first = self._claim_idempotency_key(idempotency_key, run.run_id)
            if first is not None:
                return first
        error, = self._record_and_publish([run])
        if error is not None:
            if idempotency_key is not None:
                self.redis.delete(keys.idempotency(idempotency_key))
            raise error
        return run.run_id

    def _new_run(self, request: WorkflowRunRequest,
                 deployment_fields: dict[str, Any] | None = None) -> NewRun:
        """A checked request's run: a fresh id, its GPU type and its first record fields."""
        gpu_type = resolve_gpu(request, self.settings)
        check_run_graph(self.redis, self.settings, request, gpu_type)
        if request.webhook:
            self._check_webhook(request.webhook)
        run_id = str(uuid.uuid4())
        fields = {**self._initial_fields(run_id, request, gpu_type), **(deployment_fields or {})}
        return NewRun(run_id, gpu_type, fields,
                      bool(request.webhook and request.webhook_intermediate_status))

    @functools.cached_property
    def _publishes_with_records(self) -> bool:
        return self.broker.shares_redis_with(self.redis)

    def _record_and_publish(self, runs: Sequence[NewRun]) -> list[SubmitFailed | None]:
        """Record ``runs`` as queued and put each on its queue; the error of each (None: done).

        When Redis is also the broker, every record and message go in one transaction, so a
        crash leaves none of them or all. Otherwise the records are written first and a run
        whose publish fails is deleted again, so it is never left queued with no message.
        """
        if not runs:
            return []
        inline = self._publishes_with_records
        pipeline = self.redis.pipeline(transaction=True)
        self.store.create_many(RunStatus.QUEUED, [(run.run_id, run.fields) for run in runs],
                               pipeline)
        if inline:
            try:
                messages = self._messages(runs)
            except Exception as error:
                queues = ", ".join(sorted({gpu_queue(run.gpu_type) for run in runs}))
                return [SubmitFailed(f"could not enqueue run on {queues}: {error}")] * len(runs)
            for list_name, texts in messages.items():
                # Each LPUSH value goes to the head in turn: the first run is taken first.
                pipeline.lpush(list_name, *texts)
        try:
            pipeline.execute()
        except redis.RedisError as error:
            # A transaction is not rolled back when one of its commands fails: take back what
            # it may have written, so a refused submit leaves no run behind.
            self._delete_quietly(runs)
            return [SubmitFailed(f"could not record the run in Redis: {error}")] * len(runs)
        self._wait_for_replicas()
        errors = [None if inline else self._publish(run) for run in runs]
        for run, error in zip(runs, errors, strict=True):
            if run.announce and error is None:
                self.hooks.changed(run.run_id, True)
        return errors

    def _wait_for_replicas(self) -> None:
        """Answer only once ``redis_wait_replicas`` replicas have the records just written, so a
        failover right after the answer cannot lose them (asynchronous replication would)."""
        wanted = self.settings.redis_wait_replicas
        if not wanted:
            return
        timeout_ms = max(1, int(self.settings.redis_wait_timeout_seconds * 1000))
        acknowledged = self.redis.execute_command("WAIT", wanted, timeout_ms)
        if acknowledged < wanted:
            logger.warning("only %d of %d Redis replicas acknowledged a submit within %g s; "
                           "a failover now could lose it", acknowledged, wanted,
                           self.settings.redis_wait_timeout_seconds)

    def _messages(self, runs: Sequence[NewRun]) -> dict[str, list[str]]:
        """The broker messages of ``runs``, by the Redis list each goes on, in order."""
        messages: dict[str, list[str]] = {}
        for run in runs:
            list_name, message = self.broker.run_message(run.run_id, run.gpu_type,
                                                         run.fields["priority"])
            messages.setdefault(list_name, []).append(message)
        return messages

    def _delete_quietly(self, runs: Sequence[NewRun]) -> None:
        for run in runs:
            with contextlib.suppress(redis.RedisError):
                self.store.delete(run.run_id)

    def _publish(self, run: NewRun) -> SubmitFailed | None:
        """Publish a recorded run through Celery; on failure delete its record again."""
        try:
            self.broker.publish_run(run.run_id, run.gpu_type, run.fields["priority"])
        except Exception as error:
            self.store.delete(run.run_id)
            return SubmitFailed(f"could not enqueue run on {gpu_queue(run.gpu_type)}: {error}")
        return None

    def deploy_workflow(self, workflow_id: str, graph: dict[str, Any]) -> dict[str, Any]:
        """Keep ``graph`` as the latest version of the workflow ``workflow_id``: requests that
        name it with an empty ``workflow_api_json`` (as ComfyDeploy's SDK sends them) run it, and
        ``client.deployments`` can deploy it. Returns the graph.

        :raises InvalidRunRequest: the graph is malformed (checked as a request would be).
        """
        return self.deployments.workflows.add(workflow_id, graph).graph

    def deployed_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        """The graph kept last under ``workflow_id``, or None."""
        return self.deployments.workflows.latest(workflow_id)

    def _check_webhook(self, url: str) -> None:
        """Refuse webhooks to loopback, private, link-local or metadata addresses (unless allowed)."""
        try:
            check_webhook_url(url, self.webhook_settings.address_policy)
        except UnsafeWebhookURL as error:
            raise InvalidRunRequest([FieldProblem("webhook", str(error))]) from None

    def _claim_idempotency_key(self, key: str, run_id: str) -> str | None:
        """None when ``key`` is new (now bound to ``run_id``), else the run it is bound to."""
        if not key or len(key) > 255:
            raise InvalidRunRequest([FieldProblem("idempotency_key", "must be 1 to 255 characters")])
        idem_key = keys.idempotency(key)
        if self.redis.set(idem_key, run_id, nx=True, ex=int(self.settings.run_retention_seconds)):
            return None
        return self.redis.get(idem_key)

    def _initial_fields(self, run_id: str, request: WorkflowRunRequest, gpu_type: str) -> dict:
        created = now()
        return {
            "id": run_id,
            "workflow_id": request.workflow_id,
            "workflow_inputs": request.inputs,
            "workflow_api": request.workflow_api_json,
            "workflow": request.workflow,
            "machine_id": request.machine_id,
            "origin": "api",
            "gpu": gpu_type,
            "webhook": request.webhook,
            "webhook_intermediate_status": bool(request.webhook_intermediate_status),
            "created_at": created,
            "updated_at": created,
            "queued_at": created,
            # progress, live_status, outputs and attempts start absent: read as 0, None, [], 0.
            "max_run_seconds": self.settings.run_time_limit(gpu_type, request.machine_id),
            "priority": request.priority or DEFAULT_RUN_PRIORITY,
        }

    # -- following ------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> WorkflowRunModel:
        """The run in ComfyDeploy's ``WorkflowRunModel`` shape; raises RunNotFound."""
        return run_model(self.store.get(run_id))

    def wait(self, run_id: str, timeout: float | None = None) -> WorkflowRunModel:
        """Block until the run is final and return it.

        :raises WaitTimeout: ``timeout`` seconds passed first (the run goes on).
        :raises RunNotFound: there is no such run.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        subscriber = subscriber_of_this_thread(self.redis, self._subscribers)
        with RunChanges(self.redis, run_id, subscriber) as changes:
            # Read after subscribing, so a change between the two is never missed.
            status = self.store.status(run_id)
            while not status.is_final:
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(f"run {run_id} is still {status.value} after {timeout} s")
                announced = changes.wait(min(remaining, 1.0))
                if announced is None:
                    status = self.store.status(run_id)
                elif announced in FINAL_STATUS_VALUES:
                    break
        return self.get_run(run_id)

    def cancel(self, run_id: str) -> CancelResult:
        """Stop a run: a queued run never starts; a running one stops at its next node.

        Cancelling a finished run changes nothing and says so.
        """
        status = self.store.status(run_id)
        if status.is_final:
            return CancelResult(run_id, False, status,
                                f"run already finished with status {status.value}; nothing to cancel")
        self.store.request_cancel(run_id, self.settings.visibility_timeout_seconds)
        if status in (RunStatus.NOT_STARTED, RunStatus.QUEUED) and self.store.move(
                run_id, RunStatus.CANCELLED,
                {"ended_at": now(), "live_status": "Cancelled before it started"},
                only_from=(RunStatus.NOT_STARTED, RunStatus.QUEUED)):
            self.hooks.changed(run_id, True)
            return CancelResult(run_id, True, RunStatus.CANCELLED, "cancelled before it started")
        return CancelResult(run_id, True, self.store.status(run_id),
                            "cancel requested; the worker stops the run at its next node")


def _records_client(settings: Settings) -> redis.Redis:
    return redis_client(settings.redis_url, retry_seconds=settings.outage_retry_seconds)


@functools.cache
def default_client() -> Client:
    """The client behind the module-level functions, built on first use."""
    return Client()


def submit(request: WorkflowRunRequest | dict[str, Any] | str | bytes) -> str:
    """Validate, record and enqueue a run with the default client; returns its run id."""
    return default_client().submit(request)


def get_run(run_id: str) -> WorkflowRunModel:
    """The run's record in ComfyDeploy's ``WorkflowRunModel`` shape."""
    return default_client().get_run(run_id)


def wait(run_id: str, timeout: float | None = None) -> WorkflowRunModel:
    """Block until the run is final and return its record."""
    return default_client().wait(run_id, timeout)


def cancel(run_id: str) -> CancelResult:
    """Cancel a run (a no-op, said so, when it already finished)."""
    return default_client().cancel(run_id)
