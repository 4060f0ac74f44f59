"""ComfyDeploy's deployment endpoints: run a deployment (queue, sync, stream), list and create
deployments (see :mod:`comfyq.deployments`).

A deployment run answers exactly as the workflow run of the same kind (:mod:`comfyq.api.routes`);
an unknown ``deployment_id`` answers 404, as ComfyDeploy's server does, so clients written for it
handle it unchanged (the body names the field).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from comfyq.api import schemas
from comfyq.api.routes import (
    STREAM_RESPONSES,
    SUBMIT_ERRORS,
    SYNC_RESPONSES,
    context,
    json_body,
    queue_answer,
    stream_answer,
    submitted,
    sync_answer,
)
from comfyq.deployments.shapes import DeploymentEnvironment, DeploymentModel
from comfyq.models import WorkflowRunOutputModel

router = APIRouter()


def _body(model: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model}"}}}}}


DEPLOYMENT_RUN_BODY = _body("DeploymentRunRequest")
UNKNOWN_DEPLOYMENT = {404: {"model": schemas.ErrorBody,
                            "description": "No deployment with this id."}}


async def _submit(request: Request) -> str:
    return await submitted(request, context(request).client.submit_deployment)


@router.post("/run/deployment/queue", tags=["run"], response_model=schemas.CreateRunResponse,
             responses={**SUBMIT_ERRORS, **UNKNOWN_DEPLOYMENT}, openapi_extra=DEPLOYMENT_RUN_BODY,
             summary="Queue a deployment run")
async def queue_deployment_run(request: Request) -> Response:
    """Queue a run of the deployment's current version; as ``POST /run/workflow/queue``."""
    return queue_answer(await _submit(request))


@router.post("/run/deployment/sync", tags=["run"], response_model=list[WorkflowRunOutputModel],
             responses={**SYNC_RESPONSES, **UNKNOWN_DEPLOYMENT}, openapi_extra=DEPLOYMENT_RUN_BODY,
             summary="Run a deployment and wait for its outputs")
async def sync_deployment_run(request: Request) -> Response:
    """Run the deployment's current version and answer its outputs; as
    ``POST /run/workflow/sync``."""
    return await sync_answer(context(request), await _submit(request))


@router.post("/run/deployment/stream", tags=["run"],
             responses={**STREAM_RESPONSES, **UNKNOWN_DEPLOYMENT},
             openapi_extra=DEPLOYMENT_RUN_BODY, response_class=StreamingResponse,
             summary="Run a deployment and stream its progress")
async def stream_deployment_run(request: Request) -> StreamingResponse:
    """Run the deployment's current version and stream its events; as
    ``POST /run/workflow/stream``."""
    return stream_answer(context(request), await _submit(request))


@router.get("/deployments", tags=["deployments"], response_model=list[DeploymentModel],
            responses={401: SUBMIT_ERRORS[401]}, summary="List deployments")
async def list_deployments(request: Request, environment: DeploymentEnvironment | None = None
                           ) -> list[DeploymentModel]:
    """The current version of every deployment (of one environment), oldest first, each with
    the external inputs its graph takes (``input_types``)."""
    return await run_in_threadpool(context(request).client.deployments.list, environment)


@router.post("/deployment", tags=["deployments"], response_model=DeploymentModel,
             responses=SUBMIT_ERRORS, openapi_extra=_body("DeploymentCreate"),
             summary="Deploy a workflow version")
async def create_deployment(request: Request) -> DeploymentModel:
    """Deploy a kept workflow version to an environment: the workflow's first deployment there
    gets a new id, a later one becomes a new version of it (the id stays, runs get the new
    graph). Answers the version made. 422 names every problem, an unknown ``workflow_version_id``
    or ``machine_id`` included."""
    body = await request.body()
    deployments = context(request).client.deployments
    return await run_in_threadpool(lambda: deployments.create(json_body(body)))
