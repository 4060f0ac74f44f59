"""Graphs and settings shared by the tests."""

from __future__ import annotations

import json
from typing import Any

from tests.paths import WORKFLOWS


def invert_graph(prefix: str = "invert", width: int = 8, height: int = 8,
                 color: int = 0xFF0000) -> dict[str, Any]:
    """EmptyImage -> ImageInvert -> SaveImage, with a width and prefix given by external inputs."""
    return {
        "10": {"class_type": "ComfyUIDeployExternalNumberInt",
               "inputs": {"input_id": "width", "default_value": width}},
        "11": {"class_type": "ComfyUIDeployExternalText",
               "inputs": {"input_id": "prefix", "default_value": prefix}},
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": ["10", 0], "height": height, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": ["11", 0]}},
    }


def request(graph: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"workflow_id": "test-workflow", "workflow_api_json": invert_graph() if graph is None else graph,
            **fields}


def comfyq_keys(client) -> list[str]:
    """Every key in Redis that comfyq or its Celery queues hold."""
    return sorted(client.keys("*"))


def load_reference_workflow(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / name).read_text())
