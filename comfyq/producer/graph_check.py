"""The submit-time check of a run's graph against the node catalog of its GPU type.

The request's ``inputs`` are applied first (as the worker will apply them), then the graph is
validated with ComfyUI's rules (:func:`comfyq.catalog.validation.validate_prompt`) against the
catalog the workers of that GPU type published (:mod:`comfyq.catalog.registry`). A refused graph
raises before anything is recorded or queued.

When no worker of the GPU type has published a catalog yet, ``COMFYQ_UNKNOWN_CATALOG`` decides:
``structural`` (the default) accepts a graph that passed the request's structural checks, so a
producer may submit before any worker starts; ``refuse`` raises :class:`CatalogUnavailable`.
"""

from __future__ import annotations

from typing import Any

import redis

from comfyq.catalog.reading import catalog_reader
from comfyq.catalog.validation import PromptValidationError, validate_prompt
from comfyq.errors import SubmitFailed
from comfyq.models import WorkflowRunRequest
from comfyq.settings import Settings


class CatalogUnavailable(PromptValidationError):
    """No worker of the run's GPU type has published a node catalog, and the setting refuses."""

    def __init__(self, gpu_type: str) -> None:
        super().__init__({
            "error": {
                "type": "catalog_unavailable",
                "message": f"No worker of GPU type {gpu_type} has published a node catalog yet",
                "details": "start a worker for this GPU type, or set "
                           "COMFYQ_UNKNOWN_CATALOG=structural to accept graphs unchecked",
                "extra_info": {"gpu_type": gpu_type},
            },
            "node_errors": {},
        })


def graph_to_run(request: WorkflowRunRequest) -> dict[str, Any]:
    """The graph a worker will execute: the request's graph with its ``inputs`` applied.

    :raises comfyq.inputs.ExternalInputError: an input does not fit its node.
    """
    if not request.inputs:
        return request.workflow_api_json
    from comfyq.inputs import apply_inputs

    return apply_inputs(request.workflow_api_json, request.inputs)


def check_run_graph(client: redis.Redis, settings: Settings, request: WorkflowRunRequest,
                    gpu_type: str) -> None:
    """Refuse the run unless the workers of ``gpu_type`` can execute its graph.

    :raises PromptValidationError: the graph breaks ComfyUI's rules for that catalog
        (``body`` is ComfyUI's 400 answer: ``error`` and ``node_errors``).
    :raises CatalogUnavailable: no catalog for ``gpu_type`` and ``unknown_catalog=refuse``.
    :raises comfyq.inputs.ExternalInputError: an input does not fit its node.
    :raises comfyq.errors.SubmitFailed: Redis could not be asked for the catalog.
    """
    graph = graph_to_run(request)
    try:
        catalog = catalog_reader(client).compiled(client, gpu_type)
    except redis.RedisError as error:
        raise SubmitFailed(f"could not read the node catalog of GPU type {gpu_type} from "
                           f"Redis: {error}") from error
    if catalog is None:
        if settings.unknown_catalog == "refuse":
            raise CatalogUnavailable(gpu_type)
        return
    validate_prompt(graph, catalog)
