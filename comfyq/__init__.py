"""comfyq: a distributed run queue for ComfyUI workflows on a fleet of GPUs.

Application code needs only this module::

    import comfyq

    run_id = comfyq.submit({"workflow_id": "invert", "workflow_api_json": graph,
                            "inputs": {"prompt": "a cat"}, "gpu": "A100"})
    run = comfyq.wait(run_id, timeout=600)
    print(run.status, run.outputs)

Names are loaded on first use, so ``import comfyq`` (and every ``comfyq.<module>`` import, which
runs this first) costs next to nothing: a webhook receiver importing ``comfyq.webhooks.signing``
loads neither Celery nor pydantic's models.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it.
_EXPORTS = {
    "GPU": "comfyq.models",
    "RunStatus": "comfyq.models",
    "WorkflowRunModel": "comfyq.models",
    "WorkflowRunRequest": "comfyq.models",
    "ComfyqError": "comfyq.errors",
    "FieldProblem": "comfyq.errors",
    "InvalidRunRequest": "comfyq.errors",
    "RunNotFound": "comfyq.errors",
    "UnknownGpuType": "comfyq.errors",
    "WaitTimeout": "comfyq.errors",
    "PromptValidationError": "comfyq.catalog.validation",
    "CancelResult": "comfyq.producer.client",
    "Client": "comfyq.producer.client",
    "SubmitFailed": "comfyq.errors",
    "cancel": "comfyq.producer.client",
    "get_run": "comfyq.producer.client",
    "submit": "comfyq.producer.client",
    "wait": "comfyq.producer.client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'comfyq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
