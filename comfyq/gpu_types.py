"""The GPU types comfyq knows by name: ComfyDeploy's ``WorkflowRunRequestGpu`` enum.

The one list both the request model (which GPU a request may name) and the settings (the GPU
types a deployment serves by default) are built from.
"""

from __future__ import annotations

import enum

#: ComfyDeploy's GPU types, as its API spells them.
COMFYDEPLOY_GPU_TYPES = ("T4", "L4", "A10G", "L40S", "A100", "A100-80GB", "H100")

#: The same names as an enum (``GPU.A100_80GB.value == "A100-80GB"``).
GPU = enum.Enum("GPU", [(name.replace("-", "_"), name) for name in COMFYDEPLOY_GPU_TYPES],
                type=str, module=__name__)
GPU.__doc__ = "ComfyDeploy's ``WorkflowRunRequestGpu``: the GPU types a request may ask for."
