"""The shapes comfyq speaks: ComfyDeploy's run request, run statuses, run and output records.

``WorkflowRunRequest`` accepts exactly the fields of ComfyDeploy's SDK model of the same name;
``WorkflowRunModel`` and ``WorkflowRunOutputModel`` are what ``get_run`` answers, so code written
against ComfyDeploy reads comfyq's runs unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
)
from typing_extensions import TypedDict

from comfyq import graph as graph_structure
from comfyq.errors import FieldProblem, InvalidRunRequest
from comfyq.gpu_types import GPU
from comfyq.request_json import MAX_INTEGER, load_request_json, refuse_unsafe_values
from comfyq.run_status import FINAL_RANK, FINAL_STATUSES, STATUS_RANK, RunStatus

__all__ = ["FINAL_RANK", "FINAL_STATUSES", "GPU", "STATUS_RANK", "RunStatus"]


#: Numbers as requests may hold them (see :mod:`comfyq.request_json`).
NUMBER_BOUNDS = {"minimum": -MAX_INTEGER, "maximum": MAX_INTEGER}
#: A value of the request's ``inputs``: ComfyDeploy's ``WorkflowRunRequestInputs`` union.
InputValue = (StrictStr | Annotated[StrictInt, Field(ge=-MAX_INTEGER, le=MAX_INTEGER)]
              | Annotated[StrictFloat, Field(ge=-MAX_INTEGER, le=MAX_INTEGER)] | StrictBool
              | list[Any])


def _http_url(value: str) -> str:
    scheme, _, rest = value.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if scheme.lower() not in ("http", "https") or not host or any(c.isspace() for c in value):
        raise ValueError("must be an http(s) URL, e.g. https://example.com/hook")
    return value


#: The webhook URLs the document admits: http(s), no credentials, no backslash, printable ASCII
#: (:mod:`comfyq.webhooks.safety` refuses the rest at submit, and private or unknown hosts).
WEBHOOK_URL_SCHEMA = {
    "type": "string",
    "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9._~\[\]:-]+([/?#][!-\[\]-~]*)?$",
    "description": "An http(s) URL of a public host (or one the deployment allows) without "
                   "credentials; comfyq POSTs each run's status changes to it, signed."}
#: A request's ``webhook``: an http(s) URL (where it may point is checked at submit).
WebhookURL = Annotated[StrictStr, AfterValidator(_http_url), WithJsonSchema(WEBHOOK_URL_SCHEMA)]
#: A node's ``inputs`` as the document states them: every list is a link (ComfyUI's reading).
NODE_INPUTS_SCHEMA = {"type": "object", "additionalProperties": {"anyOf": [
    {"type": ["string", "boolean", "null", "object"]}, {"type": "number", **NUMBER_BOUNDS},
    {"type": "array", "description": "A link [node_id, output_index] to a node of the graph.",
     "prefixItems": [{"type": "string"}, {"type": "integer", "minimum": 0}],
     "minItems": 2, "maxItems": 2},
]}}


#: What a run id looks like. comfyq issues UUIDs; letters, digits, ``-`` and ``_`` (at most 64)
#: cover them and ids made by hand, and leave out anything that could name another Redis key
#: (``:``, ``{``) or another folder (``/``, ``..``).
RUN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RUN_ID_MAX_LENGTH = 64
_RUN_ID = re.compile(RUN_ID_PATTERN)


def is_run_id(text: str) -> bool:
    """Whether ``text`` could be a run's id (see :data:`RUN_ID_PATTERN`)."""
    return isinstance(text, str) and _RUN_ID.fullmatch(text) is not None


#: ComfyUI's top-level error types (its ``/prompt`` answers), which a graph's problems carry as
#: their kind: no graph at all, a malformed one, one without outputs, one whose outputs fail.
NO_PROMPT = "no_prompt"
MALFORMED_PROMPT = "invalid_prompt"
NO_OUTPUTS = "prompt_no_outputs"
OUTPUTS_FAILED = "prompt_outputs_failed_validation"


class ApiNode(TypedDict):
    """One node of a ComfyUI API-format graph."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    class_type: StrictStr
    inputs: Annotated[dict[str, Any], WithJsonSchema(NODE_INPUTS_SCHEMA)]
    _meta: NotRequired[dict[str, Any]]


#: The highest priority a run may ask for; runs ask for none (0, the lowest) by default.
MAX_RUN_PRIORITY = 9
DEFAULT_RUN_PRIORITY = 0
#: A run's priority, beside ComfyDeploy's fields: taken before waiting runs of a lower one.
RunPriority = Annotated[StrictInt, Field(
    ge=DEFAULT_RUN_PRIORITY, le=MAX_RUN_PRIORITY,
    description=f"comfyq's own: {DEFAULT_RUN_PRIORITY} (the default) to {MAX_RUN_PRIORITY}; a "
                "worker takes a waiting run of a higher priority first, runs of one priority "
                "in the order they were submitted.")]


class WorkflowRunRequest(BaseModel):
    """ComfyDeploy's ``WorkflowRunRequest``: what application code submits.

    Unknown fields are refused. ``workflow_api_json`` must be a well-formed API graph: at least
    one node, every link ``[node_id, output_index]`` pointing at a node that exists, no cycles.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow_id: StrictStr
    workflow_api_json: dict[str, ApiNode]
    inputs: dict[str, InputValue] | None = Field(None, description="Values of external inputs.")
    webhook: WebhookURL | None = None
    webhook_intermediate_status: StrictBool | None = False
    gpu: GPU | None = Field(None, description="Overrides the machine's default GPU.")
    workflow: dict[str, Any] | None = None
    machine_id: StrictStr | None = None
    priority: RunPriority | None = None


def graph_problems(workflow: dict[str, Any]) -> list[FieldProblem]:
    """Structural problems of an API graph, each with its field path and ComfyUI's error type
    for it (an empty graph has no outputs; a link that cannot be looked up fails the outputs'
    validation); empty when sound."""
    base = "workflow_api_json"
    if not workflow:
        return [FieldProblem(base, "must contain at least one node (or deploy a graph under this "
                                   "workflow_id: comfyq workflows deploy)", NO_OUTPUTS)]
    problems = []
    for node_id, input_name, value in graph_structure.iter_list_inputs(workflow):
        problem = graph_structure.link_shape_problem(value)
        if problem is None and value[0] not in workflow:
            problem = f"links to node {value[0]!r}, which is not in the graph"
        if problem is not None:
            where = _dotted((base, node_id, "inputs", input_name))
            problems.append(FieldProblem(where, problem, OUTPUTS_FAILED))
    cycle = graph_structure.find_cycle(workflow)
    if cycle:
        problems.append(FieldProblem(base, "the graph has a cycle: " + " -> ".join(cycle),
                                     OUTPUTS_FAILED))
    return problems


class MediaItem(BaseModel):
    """ComfyDeploy's ``MediaItem``: one file a run produced."""

    url: str
    type: str
    filename: str
    is_public: bool | None = None
    subfolder: str | None = None
    upload_duration: float | None = None


class WorkflowRunOutputModel(BaseModel):
    """ComfyDeploy's ``WorkflowRunOutputModel``: the outputs of one output node."""

    id: str
    run_id: str
    data: dict[str, Any]
    node_meta: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime
    type: str | None = None
    node_id: str | None = None


class WorkflowRunModel(BaseModel):
    """ComfyDeploy's ``WorkflowRunModel`` plus comfyq's own fields (``worker``, ``error``, ...).

    Nullable fields are always present (as None), as ComfyDeploy sends them.
    """

    id: str
    workflow_id: str | None = None
    workflow_inputs: dict[str, Any] | None = None
    workflow_api: dict[str, Any] | None = None
    machine_id: str | None = None
    origin: str | None = None
    status: RunStatus
    gpu: str | None = None
    live_status: str | None = None
    progress: float = 0.0
    webhook: str | None = None
    webhook_status: str | None = None
    webhook_intermediate_status: bool | None = None
    number: int | None = None
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration: float | None = None
    run_duration: float | None = None
    cold_start_duration: float | None = None
    outputs: list[WorkflowRunOutputModel] = Field(default_factory=list)
    workflow_version_id: str | None = Field(
        None, description="The workflow version a deployment run executed.")
    # comfyq's own fields
    deployment_id: str | None = Field(None, description="The deployment a deployment run named.")
    deployment_version: int | None = Field(
        None, description="The version of that deployment the run executed.")
    worker: str | None = None
    error: dict[str, Any] | None = None
    executed_nodes: list[str] | None = Field(
        None, description="The nodes the run executed, in order (ComfyUI's `executing`), "
        "including those node expansion added.")
    cached_nodes: list[str] | None = Field(
        None, description="The nodes answered from the worker's cache instead (ComfyUI's "
        "`execution_cached`); known once execution starts.")
    blocked_nodes: list[dict[str, Any]] | None = Field(
        None, description="Nodes an ExecutionBlocker with a message stopped (`node_id`, "
        "`node_type`, `exception_message`); the run went on, as in ComfyUI.")
    attempts: int = 0
    webhook_attempts: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def is_final(self) -> bool:
        return self.status.is_final


def parse_run_request(data: WorkflowRunRequest | dict[str, Any] | str | bytes,
                      deployed_graph: Callable[[str], dict[str, Any] | None] | None = None
                      ) -> WorkflowRunRequest:
    """A validated request from a model, a dict or JSON text.

    :param deployed_graph: looks up the graph deployed under a ``workflow_id``; a request whose
        ``workflow_api_json`` is empty runs that graph (ComfyDeploy's clients send the workflow's
        id, and the SDK's model of the graph is an empty object).
    :raises InvalidRunRequest: listing every problem with its field path.
    """
    if isinstance(data, WorkflowRunRequest):
        refuse_unsafe_values(data.model_dump())
        return _with_graph_checked(data, deployed_graph)
    if isinstance(data, (str, bytes, bytearray)):
        data = load_request_json(data)
    else:
        refuse_unsafe_values(data)
    try:
        request = WorkflowRunRequest.model_validate(data)
    except ValidationError as error:
        problems = request_problems(error, "WorkflowRunRequest")
        raw_graph = data.get("workflow_api_json") if isinstance(data, dict) else None
        if isinstance(raw_graph, dict):
            problems += graph_problems(raw_graph)
        raise InvalidRunRequest(problems) from None
    return _with_graph_checked(request, deployed_graph)


def _with_graph_checked(request: WorkflowRunRequest,
                        deployed_graph: Callable[[str], dict[str, Any] | None] | None
                        ) -> WorkflowRunRequest:
    if not request.workflow_api_json and deployed_graph is not None:
        graph = deployed_graph(request.workflow_id)
        if graph:
            request = request.model_copy(update={"workflow_api_json": graph})
    problems = graph_problems(request.workflow_api_json)
    if problems:
        raise InvalidRunRequest(problems)
    return request


def request_problems(error: ValidationError, model_name: str) -> list[FieldProblem]:
    """Every problem pydantic found in a request to ``model_name``, one per field, dotted."""
    return _merge_union_problems([_field_problem(item, model_name) for item in error.errors()])


def _merge_union_problems(problems: list[FieldProblem]) -> list[FieldProblem]:
    """One line per field: a value that fits no member of a union gets one message, not five."""
    by_path: dict[str, list[FieldProblem]] = {}
    for problem in problems:
        by_path.setdefault(problem.path, []).append(problem)
    merged = []
    for path, group in by_path.items():
        if len(group) > 1 and all(p.message.startswith("Input should be a valid") for p in group):
            kinds = [p.message.split("(got")[0].removeprefix("Input should be a valid ").strip()
                     for p in group]
            got = group[0].message.partition("(got ")[2].rstrip(")")
            merged.append(FieldProblem(path, f"must be a {' or '.join(kinds)} (got {got})",
                                       group[0].kind))
        else:
            merged.extend(group)
    return merged


def _field_problem(item: Any, model_name: str) -> FieldProblem:
    path = _dotted(item["loc"])
    kind = item["type"]
    if kind == "extra_forbidden":
        return FieldProblem(path, f"unknown field; {model_name} has no such field")
    message = item["msg"].removeprefix("Value error, ")
    if kind not in ("value_error", "missing") and "input" in item:
        message = f"{message} (got {_short_repr(item['input'])})"
    return FieldProblem(path, message, _graph_kind(item["loc"], kind))


def _graph_kind(location: tuple[Any, ...], pydantic_kind: str) -> str:
    """ComfyUI's error type for a problem of the graph itself, else ``value_error``."""
    if not location or location[0] != "workflow_api_json":
        return "value_error"
    return NO_PROMPT if len(location) == 1 and pydantic_kind == "missing" else MALFORMED_PROMPT


def _dotted(location: tuple[Any, ...]) -> str:
    # Union members and TypedDict wrappers appear in pydantic's paths; a reader wants the field.
    parts = [str(part) for part in location if not _is_type_label(part)]
    return ".".join(parts) or "request"


def _is_type_label(part: Any) -> bool:
    return isinstance(part, str) and (
        part in ("str", "int", "float", "bool", "list[any]", "ApiNode")
        or part.startswith(("function-", "constrained-"))
    )


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
