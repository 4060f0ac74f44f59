"""Find the GPUs of this host and name their comfyq GPU type.

Detection asks NVML (``nvidia-ml-py``) when installed, else ``nvidia-smi``; both run in the
supervising process without creating a CUDA context, so forking workers afterwards is safe.
On a host without GPUs, ``--gpus A100,A100,T4`` declares simulated devices instead.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Device-name patterns -> GPU type, most specific first (names as NVML reports them).
DEVICE_NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"A100.*80\s*GB", "A100-80GB"),
    (r"A100", "A100"),
    (r"H200", "H200"),
    (r"H100", "H100"),
    (r"L40S", "L40S"),
    (r"L40", "L40"),
    (r"A10G", "A10G"),
    (r"\bL4\b", "L4"),
    (r"\bT4\b", "T4"),
)


@dataclass(frozen=True)
class Device:
    """One GPU (real or simulated) that one worker process is pinned to."""

    index: int
    name: str
    gpu_type: str
    simulated: bool = False

    @property
    def worker_name(self) -> str:
        """Celery node name prefix, so Flower shows the device: ``gpu0``."""
        return f"gpu{self.index}"

    @property
    def torch_device(self) -> str:
        """The device as the worker sees it: its only visible CUDA device, or the CPU."""
        return "cpu" if self.simulated else "cuda:0"


def gpu_type_for_name(device_name: str, extra_rules: Mapping[str, str] | None = None) -> str:
    """The GPU type of a device name, e.g. "NVIDIA H100 80GB HBM3" -> "H100".

    ``extra_rules`` (substring -> type, from ``COMFYQ_GPU_NAME_MAP``) are tried first. A name no
    rule knows gets a type made from the name itself, so it still gets a queue of its own.
    """
    for substring, gpu_type in (extra_rules or {}).items():
        if substring.lower() in device_name.lower():
            return gpu_type
    for pattern, gpu_type in DEVICE_NAME_RULES:
        if re.search(pattern, device_name, re.IGNORECASE):
            return gpu_type
    fallback = re.sub(r"[^A-Za-z0-9-]+", "-", device_name.removeprefix("NVIDIA ")).strip("-")
    logger.warning("no GPU type rule matches %r; using %r", device_name, fallback)
    return fallback


def simulated_devices(spec: str | Sequence[str]) -> list[Device]:
    """Devices from ``"A100,A100,T4"``: CPU-only stand-ins for GPUs of those types."""
    types = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec) if t.strip()]
    if not types:
        raise ValueError("--gpus needs at least one GPU type, e.g. --gpus A100,T4")
    return [Device(index, f"simulated {gpu_type}", gpu_type, simulated=True)
            for index, gpu_type in enumerate(types)]


def detect_device_names() -> list[str]:
    """Names of this host's NVIDIA GPUs, in CUDA index order; empty when there are none."""
    names = _names_from_nvml()
    return names if names is not None else _names_from_nvidia_smi()


def detect_devices(extra_rules: Mapping[str, str] | None = None) -> list[Device]:
    """This host's GPUs with their comfyq GPU types."""
    return [Device(index, name, gpu_type_for_name(name, extra_rules))
            for index, name in enumerate(detect_device_names())]


def _names_from_nvml() -> list[str] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        return [name.decode() if isinstance(name, bytes) else name for name in names]
    finally:
        pynvml.nvmlShutdown()


def _names_from_nvidia_smi() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as error:
        logger.warning("nvidia-smi failed: %s", error)
        return []
    rows = [line.split(",", 1) for line in listing.splitlines() if "," in line]
    return [name.strip() for _, name in sorted(rows, key=lambda row: int(row[0]))]
