"""What every built-in node module shares: ComfyUI's limits, the wildcard type, array checks.

IMAGE values are numpy float32 arrays ``[batch, height, width, channels]`` in 0..1 and MASK
values ``[batch, height, width]``, the layout ComfyUI uses for its torch tensors.
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


def image_batch(value: Any, input_name: str = "image") -> np.ndarray:
    """``value`` as a float32 IMAGE array ``[B, H, W, C]``; a clear error when it is not one."""
    array = np.asarray(value)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or 0 in array.shape:
        raise ValueError(
            f"{input_name}: expected an IMAGE of shape [batch, height, width, channels], "
            f"got shape {list(array.shape)}"
        )
    return array.astype(np.float32, copy=False)


def mask_batch(value: Any, input_name: str = "mask") -> np.ndarray:
    """``value`` as a float32 MASK array ``[B, H, W]`` (a single ``[H, W]`` mask gets B=1)."""
    array = np.asarray(value)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(
            f"{input_name}: expected a MASK of shape [batch, height, width], "
            f"got shape {list(array.shape)}"
        )
    return array.astype(np.float32, copy=False)
