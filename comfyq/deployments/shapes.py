"""ComfyDeploy's deployment shapes, as its SDK (0.6) models them: creating a deployment
(``DeploymentCreate``), running one (``DeploymentRunRequest``) and the deployment itself
(``DeploymentModel``), plus the parsing that names every problem of a request by its field.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from comfyq.errors import InvalidRunRequest
from comfyq.gpu_types import GPU
from comfyq.models import InputValue, RunPriority, WebhookURL, request_problems
from comfyq.request_json import load_request_json, refuse_unsafe_values

#: Validation context of DeploymentCreate: the configured machine ids (COMFYQ_MACHINES).
MACHINES = "machines"
#: Validation context of DeploymentCreate: ``(workflow_id, version_id) -> bool``, whether that
#: workflow version is kept.
VERSION_IS_KEPT = "version_is_kept"


class DeploymentEnvironment(StrEnum):
    """ComfyDeploy's environments; a workflow has at most one deployment in each."""

    STAGING = "staging"
    PRODUCTION = "production"
    PUBLIC_SHARE = "public-share"
    PRIVATE_SHARE = "private-share"


class DeploymentCreate(BaseModel):
    """ComfyDeploy's ``DeploymentCreate``: deploy a workflow version to an environment.

    The first one for a workflow and environment creates the deployment, with a new id; each
    later one adds a version to that deployment, as ComfyDeploy's server does, so clients keep
    calling the same id.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow_id: StrictStr = Field(min_length=1)
    workflow_version_id: StrictStr = Field(
        min_length=1, description="A version kept of the workflow (comfyq deployments create "
                                  "keeps one from a graph file and prints its id).")
    machine_id: StrictStr | None = Field(
        None, description="A machine of COMFYQ_MACHINES, whose default GPU runs the deployment; "
                          "'' or null for none (COMFYQ_DEFAULT_GPU).")
    environment: DeploymentEnvironment
    deployment_id: StrictStr | None = Field(
        None, min_length=1, description="comfyq's own: the id a new deployment gets (a new UUID "
                                        "by default), e.g. the one clients used on ComfyDeploy.")

    @field_validator("machine_id")
    @classmethod
    def _machine_is_configured(cls, machine_id: str | None, info: ValidationInfo) -> str | None:
        machines = (info.context or {}).get(MACHINES)
        if machine_id and machines is not None and machine_id not in machines:
            known = ", ".join(sorted(machines)) or "none configured"
            raise ValueError(f"unknown machine {machine_id!r} (known machines: {known}; "
                             "set COMFYQ_MACHINES)")
        return machine_id

    @field_validator("workflow_version_id")
    @classmethod
    def _version_is_kept(cls, version: str, info: ValidationInfo) -> str:
        is_kept = (info.context or {}).get(VERSION_IS_KEPT)
        workflow_id = info.data.get("workflow_id")
        if is_kept is not None and workflow_id is not None and not is_kept(workflow_id, version):
            raise ValueError(f"workflow {workflow_id!r} has no version {version!r} (comfyq "
                             f"deployments create {workflow_id} GRAPH.json keeps one)")
        return version


class DeploymentRunRequest(BaseModel):
    """ComfyDeploy's ``DeploymentRunRequest``: run a deployment's current version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment_id: StrictStr = Field(min_length=1)
    inputs: dict[str, InputValue] | None = Field(None, description="Values of external inputs.")
    webhook: WebhookURL | None = None
    webhook_intermediate_status: StrictBool | None = False
    gpu: GPU | None = Field(None, description="Overrides the deployment's GPU.")
    priority: RunPriority | None = None


class WorkflowWithName(BaseModel):
    id: str
    name: str


class InputModel(BaseModel):
    """One external input of a deployed graph: what a run's ``inputs`` may set."""

    type: str = Field(description="string, integer, float or boolean.")
    class_type: str
    input_id: str
    default_value: Any = None
    min_value: float | None = None
    max_value: float | None = None
    display_name: str = ""
    description: str = ""
    enum_options: list[str] | None = None
    step: float | None = None


class DeploymentModel(BaseModel):
    """ComfyDeploy's ``DeploymentModel``, one version of it; nullable fields present as null.

    ComfyDeploy's users, organisations and sharing do not exist in comfyq: ``user_id`` is '',
    the rest null.
    """

    id: str
    user_id: str = Field("", description="Always '': comfyq has no users.")
    org_id: str | None = None
    workflow_version_id: str
    workflow_id: str
    machine_id: str = Field("", description="'' when the deployment names no machine.")
    share_slug: str | None = None
    description: str | None = None
    share_options: dict[str, Any] | None = None
    showcase_media: list[dict[str, Any]] | None = None
    environment: DeploymentEnvironment
    created_at: datetime
    updated_at: datetime = Field(description="When this version was deployed.")
    workflow: WorkflowWithName | None = None
    input_types: list[InputModel] | None = None
    output_types: list[dict[str, Any]] | None = None
    # comfyq's own field
    version: int = Field(description="Which version of the deployment this is, from 1.")


Model = TypeVar("Model", bound=BaseModel)


def parse_request(model: type[Model], data: BaseModel | Any, what: str,
                  context: dict[str, Any] | None = None) -> Model:
    """``data`` (a model, a dict or JSON text) as ``model``, checked with ``context``.

    :raises InvalidRunRequest: listing every problem with its field path; values no request may
        hold (see :mod:`comfyq.request_json`) are refused first, as for workflow runs.
    """
    if isinstance(data, BaseModel):
        data = data.model_dump()
    if isinstance(data, (str, bytes, bytearray)):
        data = load_request_json(data)
    else:
        refuse_unsafe_values(data)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as error:
        raise InvalidRunRequest(request_problems(error, model.__name__), what) from None
