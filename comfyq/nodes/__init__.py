"""comfyq's built-in node library for the in-process executor (numpy on CPU, no models).

ComfyUI's model-free image, mask, primitive, string and save nodes with ComfyUI 0.3.64's exact
input specifications, ComfyDeploy's external input and output nodes, and, where torch can be
imported, a device probe. ``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS`` follow
ComfyUI's custom-node convention.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from comfyq.nodes import (
    comfydeploy,
    image,
    mask,
    postprocessing,
    primitives,
    remote_inputs,
    save,
    text,
)


def _node_modules() -> list[ModuleType]:
    modules = [image, postprocessing, mask, primitives, text, save, comfydeploy, remote_inputs]
    if _torch_imports():
        from comfyq.nodes import torch_probe

        modules.append(torch_probe)
    return modules


def _torch_imports() -> bool:
    """Whether ``import torch`` works (importing it initialises no CUDA device)."""
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch  # noqa: F401
    except Exception:  # a broken install (e.g. mismatched CUDA libraries) means no torch nodes
        return False
    return True


NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in _node_modules():
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
