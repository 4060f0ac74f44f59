"""ComfyUI's ``ExecutionBlocker``: a value that stops whatever would consume it.

A node returns ``ExecutionBlocker(message)`` in place of an output (or as its whole result); any
call of a node that receives one does not happen and yields the blocker instead, so the block
travels downstream item by item: in a list, only the items that carry a blocker are blocked.
With a message, the block is also reported (ComfyUI shows it as an error on the blocked node,
yet the run goes on); with None it is silent.

Custom node packs import ComfyUI's own class (``comfy_execution.graph.ExecutionBlocker``), which
comfyq must recognise without importing ComfyUI: any object of a class named
``ExecutionBlocker`` with a ``message`` attribute is a blocker.
"""

from __future__ import annotations

from typing import Any


class ExecutionBlocker:
    """Return this from a node to block its consumers; ``message`` None blocks silently."""

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


def is_blocker(value: Any) -> bool:
    """Whether ``value`` is comfyq's or ComfyUI's ``ExecutionBlocker``."""
    kind = type(value)
    return kind is ExecutionBlocker or (
        kind.__name__ == "ExecutionBlocker" and hasattr(value, "message"))


def blocker_among(arguments: dict[str, Any], input_is_list: bool) -> Any:
    """The first blocker among one call's arguments (inside the lists, for ``INPUT_IS_LIST``
    nodes), or None."""
    for value in arguments.values():
        if input_is_list and isinstance(value, list):
            for item in value:
                if is_blocker(item):
                    return item
        elif is_blocker(value):
            return value
    return None
