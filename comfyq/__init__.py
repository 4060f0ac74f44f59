"""comfyq: a distributed run queue for ComfyUI workflows on a fleet of GPUs.

Application code needs only this module::

    import comfyq

    run_id = comfyq.submit({"workflow_id": "invert", "workflow_api_json": graph,
                            "inputs": {"prompt": "a cat"}, "gpu": "A100"})
    run = comfyq.wait(run_id, timeout=600)
    print(run.status, run.outputs)
"""

from pathlib import Path as _Path

# tasks/, workers/ and scheduler/ sit at the top of the repository (the project's layout) and are
# installed as comfyq.tasks, comfyq.workers and comfyq.scheduler. When comfyq is imported from a
# source checkout (the repository root on sys.path), let those imports find the top-level folders.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "tasks").is_dir():
    __path__.append(str(_checkout))

from comfyq.catalog_validation import PromptValidationError
from comfyq.errors import (
    ComfyqError,
    FieldProblem,
    InvalidRunRequest,
    RunNotFound,
    UnknownGpuType,
    WaitTimeout,
)
from comfyq.models import GPU, RunStatus, WorkflowRunModel, WorkflowRunRequest
from comfyq.producer import CancelResult, Client, SubmitFailed, cancel, get_run, submit, wait

__all__ = [
    "GPU",
    "CancelResult",
    "Client",
    "ComfyqError",
    "FieldProblem",
    "InvalidRunRequest",
    "PromptValidationError",
    "RunNotFound",
    "RunStatus",
    "SubmitFailed",
    "UnknownGpuType",
    "WaitTimeout",
    "WorkflowRunModel",
    "WorkflowRunRequest",
    "cancel",
    "get_run",
    "submit",
    "wait",
]
