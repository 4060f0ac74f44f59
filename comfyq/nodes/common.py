"""What every built-in node module shares: ComfyUI's limits, the wildcard type, array checks.

IMAGE values are float32 ``[batch, height, width, channels]`` in 0..1 and MASK values
``[batch, height, width]``, the layout ComfyUI uses for its torch tensors. Built-in nodes take
numpy arrays or torch tensors (on any device; the engine hands them torch tensors where torch
is installed) and compute with numpy; the engine turns what they return into its own kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: ComfyUI's ``nodes.MAX_RESOLUTION``: the largest width or height a node input accepts.
MAX_RESOLUTION = 16384


class AnyType(str):
    """ComfyUI's wildcard type ``"*"``: a type string that no other type compares unequal to.

    Validators compare socket types with ``!=``; answering False lets a wildcard output feed any
    input, which is how custom node packs (ComfyDeploy among them) declare "any".
    """

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


#: The wildcard socket type.
ANY = AnyType("*")


def _batch(value: Any, input_name: str, kind: str, axes: str) -> np.ndarray:
    """``value`` as a float32 batch with the axes ``axes`` names; one item gets a batch of 1."""
    array = np.asarray(as_numpy(value))
    rank = axes.count(",") + 1
    if array.ndim == rank - 1:
        array = array[None]
    if array.ndim != rank or 0 in array.shape:
        raise ValueError(
            f"{input_name}: expected {kind} of shape [{axes}], got shape {list(array.shape)}"
        )
    return array.astype(np.float32, copy=False)


def as_numpy(value: Any) -> Any:
    """A torch tensor (on any device) as a numpy array; anything else unchanged."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def image_batch(value: Any, input_name: str = "image") -> np.ndarray:
    """``value`` as a float32 IMAGE array ``[B, H, W, C]``; a clear error when it is not one."""
    return _batch(value, input_name, "an IMAGE", "batch, height, width, channels")


def mask_batch(value: Any, input_name: str = "mask") -> np.ndarray:
    """``value`` as a float32 MASK array ``[B, H, W]`` (a single ``[H, W]`` mask gets B=1)."""
    return _batch(value, input_name, "a MASK", "batch, height, width")
