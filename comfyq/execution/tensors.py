"""IMAGE and MASK values between nodes: torch tensors on the worker's device where torch is
installed (ComfyUI's own representation, which custom node packs compute on), numpy arrays
otherwise.

Both are ``[B, H, W, C]`` (MASK ``[B, H, W]``) float32 in 0..1. comfyq's built-in nodes accept
either and compute with numpy; whatever a node returns on an ``IMAGE`` or ``MASK`` output as a
numpy array becomes a float32 tensor on the worker's device when tensors are torch's, so every
node, built-in or not, receives torch tensors there. The conversion copies no pixel values
(``torch.from_numpy`` shares the array's memory on the CPU), so pixels are unchanged.

``COMFYQ_IN_PROCESS_TENSORS`` chooses: ``auto`` (torch when it imports), ``torch`` or ``numpy``.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from comfyq.execution.node_calls import NodeOutputs

#: The socket types whose values are pixel arrays.
PIXEL_TYPES = frozenset({"IMAGE", "MASK"})

TENSOR_LIBRARIES = ("auto", "torch", "numpy")


class TensorBoundary(Protocol):
    """Turns a node's outputs into the engine's representation."""

    library: str

    def outputs(self, outputs: NodeOutputs, return_types: Sequence[Any]) -> NodeOutputs: ...


class NumpyBoundary:
    """Values stay as nodes return them (numpy arrays for the built-ins)."""

    library = "numpy"

    def outputs(self, outputs: NodeOutputs, return_types: Sequence[Any]) -> NodeOutputs:
        return outputs


class TorchBoundary:
    """numpy arrays on ``IMAGE``/``MASK`` outputs become float32 tensors on ``device``."""

    library = "torch"

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def outputs(self, outputs: NodeOutputs, return_types: Sequence[Any]) -> NodeOutputs:
        converted = outputs
        for index, socket_type in enumerate(return_types):
            if index >= len(outputs) or socket_type not in PIXEL_TYPES:
                continue
            items = outputs[index]
            if any(isinstance(item, np.ndarray) for item in items):
                if converted is outputs:
                    converted = list(outputs)
                converted[index] = [self.tensor(item) for item in items]
        return converted

    def tensor(self, value: Any) -> Any:
        if not isinstance(value, np.ndarray):
            return value
        tensor = self.torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        return tensor if self.device.type == "cpu" else tensor.to(self.device)


@functools.cache
def torch_available() -> bool:
    """Whether ``import torch`` works (a broken install counts as none)."""
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def boundary(device: str, library: str = "auto") -> TensorBoundary:
    """The boundary for a worker on ``device``; ``library`` is ``auto``, ``torch`` or ``numpy``.

    :raises ValueError: ``library`` is none of those, or ``torch`` where torch does not import.
    """
    if library not in TENSOR_LIBRARIES:
        raise ValueError(f"COMFYQ_IN_PROCESS_TENSORS must be one of {', '.join(TENSOR_LIBRARIES)}"
                         f", not {library!r}")
    if library == "numpy" or (library == "auto" and not torch_available()):
        return NumpyBoundary()
    if not torch_available():
        raise ValueError("COMFYQ_IN_PROCESS_TENSORS=torch, but torch does not import here "
                         "(pip install 'comfyq[torch]')")
    return TorchBoundary(device)

