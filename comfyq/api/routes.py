"""The run endpoints of ComfyDeploy's API: queue, sync, stream, get and cancel.

Request bodies are read raw and validated by :func:`comfyq.models.parse_run_request` (through
``Client.submit``), exactly as the Python client validates them, so both report the same problems
with the same field paths; the OpenAPI document still describes them with the same pydantic model
(see :mod:`comfyq.api.openapi`). The blocking calls of :class:`comfyq.Client` (submit, cancel) run
in the threadpool; reading and following runs use redis.asyncio on the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from comfyq.api import schemas
from comfyq.api.errors import error_answer
from comfyq.api.sse import EVENT_STREAM, KEEPALIVE_SECONDS, run_events
from comfyq.errors import FieldProblem, InvalidRunRequest
from comfyq.models import RunStatus, WorkflowRunOutputModel
from comfyq.producer.client import Client, SubmitOutcome
from comfyq.request_json import load_request_json
from comfyq.runs.follow import RunFollower
from comfyq.settings import Settings
from comfyq.web.run_ids import RunId

#: Header with which a caller makes a submit safe to retry: the same key gives the same run.
IDEMPOTENCY_HEADER = "idempotency-key"
#: Header naming the run on answers that do not carry its id in the body.
RUN_ID_HEADER = "x-comfyq-run-id"
#: HTTP status of a sync request whose run ended without success.
SYNC_FAILURE_STATUS = {RunStatus.FAILED: 500, RunStatus.TIMEOUT: 504, RunStatus.CANCELLED: 409}
#: HTTP status of a sync request whose run outlived the server's wait limit.
SYNC_WAIT_LIMIT_STATUS = 504

#: The request body of the submit endpoints, in the OpenAPI document (see comfyq.api.openapi).
RUN_REQUEST_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/WorkflowRunRequest"}}}}}
SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.PromptErrorBody, "description": "The graph failed node validation."},
    401: {"model": schemas.ErrorBody, "description": "Missing or invalid bearer token."},
    413: {"model": schemas.ErrorBody, "description": "The body is over the size limit."},
    422: {"model": schemas.ValidationErrorBody, "description": "Every problem of the request."},
    503: {"model": schemas.ErrorBody, "description": "Redis or the broker is unreachable."},
}
SYNC_RESPONSES: dict[int | str, dict[str, Any]] = {
    **SUBMIT_ERRORS,
    500: {"model": schemas.RunEndedBody, "description": "The run failed."},
    504: {"model": schemas.RunEndedBody, "description": "The run timed out, or outlived the wait "
                                                       "limit."},
    409: {"model": schemas.RunEndedBody, "description": "The run was cancelled."},
}
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    **SUBMIT_ERRORS,
    200: {"content": {EVENT_STREAM: {"schema": {"$ref": "#/components/schemas/StreamEvent"}}},
          "description": "Server-sent events until the run is final."},
}
RUN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: SUBMIT_ERRORS[401],
    404: {"model": schemas.ErrorBody, "description": "No run with this id."},
}


@dataclass
class ApiContext:
    """What the endpoints share: settings, the comfyq client, and the run follower."""

    settings: Settings
    client: Client
    follower: RunFollower | None = None


def context(request: Request) -> ApiContext:
    return request.app.state.comfyq


router = APIRouter(tags=["run"])


def json_body(body: bytes) -> Any:
    """A request body's JSON document.

    Bodies are parsed here rather than by pydantic so that a request with both field errors
    and graph errors gets all of them listed (see ``parse_run_request``).

    :raises InvalidRunRequest: the body is not JSON, or holds text that is not Unicode, NaN or
        Infinity, or nesting deeper than the limit (see :mod:`comfyq.request_json`).
    """
    return load_request_json(body)


async def submitted(request: Request, submit: Callable[[Any, str | None], str]) -> str:
    """The id of the run ``submit`` (a blocking Client method, run in the threadpool) made of the
    request's body and ``Idempotency-Key``."""
    body = await request.body()
    key = request.headers.get(IDEMPOTENCY_HEADER)
    return await run_in_threadpool(lambda: submit(json_body(body), key))


async def _submit(request: Request) -> str:
    return await submitted(request, context(request).client.submit)


def queue_answer(run_id: str) -> Response:
    return JSONResponse({"run_id": run_id})


@router.post("/run/workflow/queue", response_model=schemas.CreateRunResponse,
             responses=SUBMIT_ERRORS, openapi_extra=RUN_REQUEST_BODY,
             summary="Queue a workflow run")
async def queue_run(request: Request) -> Response:
    """Validate, record and queue a run; answers its id at once.

    An ``Idempotency-Key`` header makes the call safe to retry: the same key answers the first
    run's id and queues nothing new.
    """
    return queue_answer(await _submit(request))


#: Most run requests one batch may carry.
MAX_BATCH_RUNS = 1000


@router.post("/run/workflow/queue/batch", response_model=schemas.BatchRunResponse,
             responses={code: SUBMIT_ERRORS[code] for code in (401, 413, 422, 503)},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/BatchRunRequest"}}}}},
             summary="Queue many workflow runs (comfyq's own)")
async def queue_runs(request: Request) -> Response:
    """Validate, record and queue up to 1,000 runs in one call: ``{"runs": [request, ...]}``.

    Each request is answered on its own, in order, with its run id or with the status and body
    ``POST /run/workflow/queue`` would have answered it; the valid ones are queued even when
    others are refused. Not part of ComfyDeploy's API.
    """
    batch = json_body(await request.body())
    problems = batch_problems(batch)
    if problems:
        raise InvalidRunRequest(problems, "batch")
    outcomes = await run_in_threadpool(context(request).client.submit_many, batch["runs"])
    return JSONResponse({"runs": [batch_answer(request, outcome) for outcome in outcomes]})


def batch_problems(batch: Any) -> list[FieldProblem]:
    if not isinstance(batch, dict) or set(batch) != {"runs"}:
        return [FieldProblem("request", 'must be an object with one field, "runs"')]
    if not isinstance(batch["runs"], list):
        return [FieldProblem("runs", "must be a list of run requests")]
    if len(batch["runs"]) > MAX_BATCH_RUNS:
        return [FieldProblem("runs", f"holds {len(batch['runs'])} requests; the most one batch "
                                     f"may hold is {MAX_BATCH_RUNS}")]
    return [FieldProblem(f"runs.{index}", "must be an object (a run request)")
            for index, run in enumerate(batch["runs"]) if not isinstance(run, dict)]


def batch_answer(request: Request, outcome: SubmitOutcome) -> dict[str, Any]:
    if outcome.error is None:
        return {"run_id": outcome.run_id, "status": 200, "error": None}
    answer = error_answer(request, outcome.error)
    return {"run_id": None, "status": answer.status_code, "error": json.loads(answer.body)}


@router.post("/run/workflow/sync", response_model=list[WorkflowRunOutputModel],
             responses=SYNC_RESPONSES, openapi_extra=RUN_REQUEST_BODY,
             summary="Run a workflow and wait for its outputs")
async def sync_run(request: Request) -> Response:
    """Queue a run, wait for it (up to ``COMFYQ_API_SYNC_TIMEOUT_SECONDS``), answer its outputs.

    A run that does not succeed answers 500 (failed), 504 (timed out) or 409 (cancelled); one
    still going at the wait limit answers 504. Either way the body names the run and its status,
    and the ``X-Comfyq-Run-Id`` header the run, so it can be followed with ``GET /run/{id}``.
    """
    return await sync_answer(context(request), await _submit(request))


async def sync_answer(api: ApiContext, run_id: str) -> Response:
    """The outputs of ``run_id`` once it succeeds, or why not (see ``sync_run``)."""
    async for _ in api.follower.watch(run_id, api.settings.api_sync_timeout_seconds,
                                      KEEPALIVE_SECONDS):
        pass
    run = await api.follower.get(run_id)
    headers = {RUN_ID_HEADER: run_id}
    if run.status == RunStatus.SUCCESS:
        outputs = [output.model_dump(mode="json") for output in run.outputs]
        return JSONResponse(outputs, headers=headers)
    if run.status.is_final:
        detail = f"run {run_id} ended with status {run.status.value}"
        if run.error and run.error.get("exception_message"):
            detail += f": {run.error['exception_message']}"
        status_code = SYNC_FAILURE_STATUS[run.status]
    else:
        detail = (f"run {run_id} is still {run.status.value} after "
                  f"{api.settings.api_sync_timeout_seconds:g} s; follow it with GET /run/{run_id}")
        status_code = SYNC_WAIT_LIMIT_STATUS
    body = schemas.RunEndedBody(detail=detail, run_id=run_id, status=run.status, error=run.error)
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code, headers=headers)


@router.post("/run/workflow/stream", responses=STREAM_RESPONSES, openapi_extra=RUN_REQUEST_BODY,
             response_class=StreamingResponse, summary="Run a workflow and stream its progress")
async def stream_run(request: Request) -> StreamingResponse:
    """Queue a run and follow it with server-sent events, ending with its final status.

    Events (``event: event_update``, data ``{"event", "data"}``): ``run_created`` with the run
    id, ``status`` on each status change (the last one final, with outputs and error),
    ``progress`` when only progress or live status changed, and ``stream_timeout`` if the run
    outlives ``COMFYQ_API_STREAM_TIMEOUT_SECONDS``. ``event: log_update`` carries each new live
    status line as ``{"logs", "timestamp"}``.
    """
    return stream_answer(context(request), await _submit(request))


def stream_answer(api: ApiContext, run_id: str) -> StreamingResponse:
    """The server-sent events of ``run_id`` (see ``stream_run``)."""
    events = run_events(api.follower, run_id, api.settings.api_stream_timeout_seconds)
    return StreamingResponse(events, media_type=EVENT_STREAM, headers={
        RUN_ID_HEADER: run_id, "cache-control": "no-cache", "x-accel-buffering": "no"})


@router.get("/run/{run_id}", response_model=schemas.RunModel, responses=RUN_ERRORS,
            summary="Get a run")
async def get_run(run_id: RunId, request: Request) -> schemas.RunModel:
    """The run in ComfyDeploy's ``WorkflowRunModel`` shape; nullable fields present as null."""
    run = await context(request).follower.get(run_id)
    return schemas.RunModel.from_run(run)


@router.post("/run/{run_id}/cancel", response_model=schemas.CancelResponse, responses=RUN_ERRORS,
             summary="Cancel a run")
async def cancel_run(run_id: RunId, request: Request) -> schemas.CancelResponse:
    """Stop a run: a queued run never starts, a running one stops at its next node.

    Cancelling a finished run changes nothing and says so (``cancelled`` false). Any body (the
    ComfyDeploy SDK sends ``{"function_id": ...}``) is ignored.
    """
    result = await run_in_threadpool(context(request).client.cancel, run_id)
    return schemas.CancelResponse(run_id=result.run_id, cancelled=result.cancelled,
                                  status=result.status, message=result.message)
