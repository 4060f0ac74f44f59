"""The node classes a worker can execute: comfyq's built-ins plus configured custom node packs."""

from __future__ import annotations

import functools


@functools.cache
def node_classes() -> dict[str, type]:
    """class_type -> node class for this process."""
    from comfyq.nodes import NODE_CLASS_MAPPINGS

    return dict(NODE_CLASS_MAPPINGS)
