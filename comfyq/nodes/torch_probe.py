"""A debug node proving which device a worker really computes on (only where torch imports).

It multiplies two fixed 256x256 matrices on :attr:`RunContext.device` and reports the device,
its name and a checksum of the product; the same checksum from every worker (within float
rounding) shows that they all compute, and the name shows on what. torch is imported when the
node runs, never when comfyq imports it, and CUDA is touched only then.
"""

from __future__ import annotations

import platform
from typing import Any

from comfyq.run_context import current_context

MATRIX_SIZE = 256


def device_name(torch: Any, device: Any) -> str:
    """A human name of ``device``: the GPU's marketing name, or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def probe(device_spec: str) -> str:
    """``"<device> <name> checksum=<sum of A @ A.T>"`` computed on ``device_spec``."""
    import torch

    device = torch.device(device_spec)
    values = torch.arange(MATRIX_SIZE * MATRIX_SIZE, dtype=torch.float32, device=device)
    matrix = (values % 97).reshape(MATRIX_SIZE, MATRIX_SIZE) / 97.0
    checksum = float((matrix @ matrix.T).sum().item())
    return f"{device_spec} {device_name(torch, device)} checksum={checksum:.6e}"


class ComfyqTorchDeviceProbe:
    """Run a small matrix product on this worker's device and report where it ran."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {}}

    @classmethod
    def IS_CHANGED(cls, **_: Any) -> float:
        return float("nan")

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "comfyq/debug"

    def probe(self) -> dict[str, Any]:
        report = probe(current_context().device)
        return {"ui": {"text": [report]}, "result": (report,)}


NODE_CLASS_MAPPINGS: dict[str, type] = {"ComfyqTorchDeviceProbe": ComfyqTorchDeviceProbe}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {"ComfyqTorchDeviceProbe": "Torch Device Probe"}
