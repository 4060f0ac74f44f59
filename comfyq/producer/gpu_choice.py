"""Which GPU type a run needs."""

from __future__ import annotations

from comfyq.errors import UnknownGpuType
from comfyq.models import WorkflowRunRequest
from comfyq.settings import Settings


def resolve_gpu(request: WorkflowRunRequest, settings: Settings) -> str:
    """The request's ``gpu``, else its machine's default GPU, else the configured default.

    :raises UnknownGpuType: when that GPU type is not in ``settings.gpu_types`` (no worker
        would ever serve its queue), or the machine id is unknown.
    """
    if request.gpu is not None:
        gpu_type, source = request.gpu.value, "gpu"
    elif request.machine_id is not None:
        if request.machine_id not in settings.machines:
            known = ", ".join(sorted(settings.machines)) or "none configured"
            raise UnknownGpuType(
                "machine_id", f"unknown machine {request.machine_id!r} (known machines: {known}; "
                "set COMFYQ_MACHINES)"
            )
        gpu_type, source = settings.machines[request.machine_id], "machine_id"
    else:
        gpu_type, source = settings.default_gpu, "COMFYQ_DEFAULT_GPU"
    if gpu_type not in settings.gpu_types:
        raise UnknownGpuType(
            source, f"GPU type {gpu_type!r} is not served by this deployment "
            f"(COMFYQ_GPU_TYPES = {', '.join(settings.gpu_types)})"
        )
    return gpu_type
