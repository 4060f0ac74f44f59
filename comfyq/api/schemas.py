"""The bodies the HTTP API answers, as pydantic models; the OpenAPI document is generated from them.

Requests are comfyq's own :class:`~comfyq.models.WorkflowRunRequest`. Answers follow ComfyDeploy's
API as its SDK models it, so that SDK parses them unchanged: run records carry ComfyDeploy's
hosted-service fields comfyq has no use for (present as null), and validation errors use the
``{"detail": [{"loc", "msg", "type"}]}`` shape of ComfyDeploy's (FastAPI) server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from comfyq.models import RunStatus, WorkflowRunModel, WorkflowRunOutputModel


class CreateRunResponse(BaseModel):
    """ComfyDeploy's ``CreateRunResponse``: the id of the run just queued."""

    run_id: str


class RunModel(WorkflowRunModel):
    """``GET /run/{run_id}``: comfyq's run record in ComfyDeploy's ``WorkflowRunModel`` shape.

    The fields below describe ComfyDeploy's hosted service (its users, organisations, Modal
    calls); comfyq has none of that and sends them as null so ComfyDeploy's SDK accepts the
    record. ``number`` is always 0: comfyq does not number runs.
    """

    number: int = Field(0, description="Always 0: comfyq does not number runs.")
    gpu_event_id: str | None = None
    machine_version: str | None = None
    machine_type: str | None = None
    modal_function_call_id: str | None = None
    user_id: str | None = None
    org_id: str | None = None
    cold_start_duration_total: float | None = Field(
        None, description="Same as cold_start_duration (comfyq has no separate total)."
    )
    is_realtime: bool = False

    @classmethod
    def from_run(cls, run: WorkflowRunModel) -> RunModel:
        fields = run.model_dump()
        fields["number"] = run.number or 0
        return cls(**fields, cold_start_duration_total=run.cold_start_duration)


class BatchRunRequest(BaseModel):
    """``POST /run/workflow/queue/batch`` (comfyq's own): many run requests at once."""

    model_config = ConfigDict(extra="forbid")

    runs: list[dict[str, Any]] = Field(
        description="Run requests, each a WorkflowRunRequest as the body of "
                    "``POST /run/workflow/queue`` takes it, checked and answered on its own.",
        max_length=1000)


class BatchRunAnswer(BaseModel):
    """One request's answer in a batch: its run id, or the status code and body the single
    endpoint would have answered it with."""

    run_id: str | None = None
    status: int = Field(200, description="The HTTP status the request alone would have got.")
    error: dict[str, Any] | None = Field(None, description="That answer's body, when not 200.")


class BatchRunResponse(BaseModel):
    """The answer of each request of a batch, in order."""

    runs: list[BatchRunAnswer]


class CancelResponse(BaseModel):
    """What ``POST /run/{run_id}/cancel`` did; ``cancelled`` is false for a finished run."""

    run_id: str
    cancelled: bool
    status: RunStatus
    message: str


class ValidationProblem(BaseModel):
    """One problem of a request: where (``loc``, from ``body``), what, and its kind."""

    loc: list[str | int] = Field(description='Path of the field, e.g. ["body", "gpu"].')
    msg: str
    type: str
    field: str = Field(description="The same path, dotted, as comfyq's Python errors name it.")


class ValidationErrorBody(BaseModel):
    """422: every problem of the request (FastAPI's shape, which ComfyDeploy's SDK parses)."""

    detail: list[ValidationProblem]
    message: str = Field(description="A one-paragraph summary of all problems.")


class PromptErrorBody(BaseModel):
    """400: the graph was refused by node-catalog validation, in ComfyUI's ``/prompt`` shape."""

    error: dict[str, Any] = Field(description='{"type", "message", "details", "extra_info"}')
    node_errors: dict[str, Any] = Field(
        description='node id -> {"errors": [...], "dependent_outputs": [...], "class_type"}'
    )


class ErrorBody(BaseModel):
    """Any other error: what went wrong, in one sentence."""

    detail: str


class RunEndedBody(BaseModel):
    """A sync request whose run did not succeed, or outlived the server's wait limit."""

    detail: str
    run_id: str
    status: RunStatus
    error: dict[str, Any] | None = None


class FileUploadResponse(BaseModel):
    """ComfyDeploy's answer to ``POST /file/upload``."""

    message: str
    file_id: str = Field(description="The id the file is kept under.")
    file_name: str = Field(description="The file's name as kept (folders and odd characters "
                                       "dropped).")
    file_url: str = Field(description="Where workers fetch it: pass it in a run's inputs.")


class HealthBody(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyBody(BaseModel):
    """``GET /ready``: ``ready`` only when Redis answers and at least one worker is online."""

    status: Literal["ready", "not ready"]
    redis: bool
    workers: int
    detail: str | None = None


# --- server-sent events of POST /run/workflow/stream ---------------------------------------------


class RunState(BaseModel):
    """The state of a run as a stream reports it; ``outputs`` and ``error`` once it is final."""

    run_id: str
    status: RunStatus
    live_status: str | None = None
    progress: float = 0.0
    outputs: list[WorkflowRunOutputModel] | None = None
    error: dict[str, Any] | None = None


class EventUpdate(BaseModel):
    """The ``data`` of an ``event_update`` event: an event name and its data.

    Names: ``run_created`` (data ``{"run_id"}``), ``status`` (a :class:`RunState`, on every
    status change; the last event of a stream is the final status, with outputs),
    ``progress`` (a :class:`RunState`, when only progress or live status changed),
    ``stream_timeout`` (a :class:`RunState`: the server stopped following the run, which goes on).
    """

    event: str
    data: Any = None


class LogData(BaseModel):
    """The ``data`` of a ``log_update`` event: the run's new live status line."""

    logs: str
    timestamp: datetime


def _json_text(schema: dict[str, Any]) -> None:
    """A field sent as JSON text (an event's ``data:`` line), whose decoded value is ``schema``."""
    decoded = dict(schema)
    schema.clear()
    schema.update(type="string", contentMediaType="application/json", contentSchema=decoded)


class StreamEvent(BaseModel):
    """One server-sent event: ``event:`` is the ``event`` field, ``data:`` the JSON of ``data``.

    The document describes each event as it is sent, so ``data`` is text whose content is JSON.
    """

    event: Literal["event_update", "log_update"]
    data: EventUpdate | LogData = Field(json_schema_extra=_json_text)
