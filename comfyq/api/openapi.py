"""The OpenAPI document: FastAPI's, plus the models the routes reference by name.

The submit endpoints read their bodies raw (see :mod:`comfyq.api.routes`), and the stream
endpoint answers events rather than one JSON value, so FastAPI cannot see those models by
itself; their JSON schemas, generated from the same pydantic models, are added here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from comfyq.api.schemas import StreamEvent
from comfyq.deployments.shapes import DeploymentCreate, DeploymentRunRequest
from comfyq.models import WorkflowRunRequest

#: Models referenced as ``#/components/schemas/<name>`` by the routes.
REFERENCED_MODELS: tuple[type[BaseModel], ...] = (WorkflowRunRequest, StreamEvent,
                                                  DeploymentRunRequest, DeploymentCreate)


def referenced_schemas() -> dict[str, Any]:
    """JSON schemas of :data:`REFERENCED_MODELS` and the models they use, by name."""
    _, document = models_json_schema([(model, "validation") for model in REFERENCED_MODELS],
                                     ref_template="#/components/schemas/{model}")
    return document.get("$defs", {})


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the referenced models' schemas."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in referenced_schemas().items():
                schemas.setdefault(name, schema)
            document.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}}
            document["security"] = [{"bearer": []}]
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
