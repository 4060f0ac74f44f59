"""The OpenAPI document: FastAPI's, plus the models the routes reference by name.

The submit endpoints read their bodies raw (see :mod:`comfyq.api.routes`), and the stream
endpoint answers events rather than one JSON value, so FastAPI cannot see those models by
itself; their JSON schemas, generated from the same pydantic models, are added here.

The document states what this deployment accepts: ``gpu`` names only the GPU types it serves,
and every submit documents its ``Idempotency-Key`` header (1 to 255 characters). What depends on
other fields or on stored state (a ``machine_id`` is refused only without ``gpu``; an empty
``workflow_api_json`` runs a deployed workflow; a link must name a node of the graph; a webhook
host must resolve to an allowed address) is in the descriptions, not the schemas.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from comfyq.api.schemas import BatchRunRequest, StreamEvent
from comfyq.deployments.shapes import DeploymentCreate, DeploymentRunRequest
from comfyq.models import WorkflowRunRequest
from comfyq.settings import Settings

#: Models referenced as ``#/components/schemas/<name>`` by the routes.
REFERENCED_MODELS: tuple[type[BaseModel], ...] = (WorkflowRunRequest, StreamEvent,
                                                  DeploymentRunRequest, DeploymentCreate,
                                                  BatchRunRequest)


def referenced_schemas() -> dict[str, Any]:
    """JSON schemas of :data:`REFERENCED_MODELS` and the models they use, by name."""
    _, document = models_json_schema([(model, "validation") for model in REFERENCED_MODELS],
                                     ref_template="#/components/schemas/{model}")
    return document.get("$defs", {})


#: The request bodies of the submit endpoints, which take an ``Idempotency-Key`` header.
RUN_REQUEST_REFS = frozenset(f"#/components/schemas/{model.__name__}"
                             for model in (WorkflowRunRequest, DeploymentRunRequest))
IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Makes the submit safe to retry: the same key answers the first run's id "
                   "and queues nothing new.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255}}


def served_only(schemas: dict[str, Any], settings: Settings) -> None:
    """Narrow the GPU types a request may name to those ``settings`` serve."""
    gpu = schemas["GPU"]
    served = [name for name in gpu["enum"] if name in settings.gpu_types]
    schemas["GPU"] = {**gpu, "enum": served} if served else {"not": {}}


def document_idempotency(paths: dict[str, Any]) -> None:
    """Add the ``Idempotency-Key`` header to every operation that submits a run request."""
    for operations in paths.values():
        for operation in operations.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if body.get("schema", {}).get("$ref") in RUN_REQUEST_REFS:
                operation.setdefault("parameters", []).append(IDEMPOTENCY_PARAMETER)


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Make ``app.openapi()`` include the referenced models' schemas, narrowed to what
    ``settings`` serve."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in referenced_schemas().items():
                schemas.setdefault(name, schema)
            served_only(schemas, settings)
            document_idempotency(document["paths"])
            document.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}}
            document["security"] = [{"bearer": []}]
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
