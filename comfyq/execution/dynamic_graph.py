"""The graph of one run as it grows: the submitted nodes plus those node expansion adds.

A node may return ``{"result": ..., "expand": graph}``; the nodes of ``graph`` (ephemeral nodes)
join the run. Each remembers the node that created it, so an error anywhere inside an expansion
is reported on the submitted node it came from (:meth:`DynamicGraph.real_node_id`), as ComfyUI
reports it. The methods with ComfyUI's names (``get_node``, ``has_node``, ...) are what nodes that
declare a ``DYNPROMPT`` hidden input call (loop nodes read the graph to copy their body).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class NodeNotFoundError(KeyError):
    """A node id that is neither submitted nor added by an expansion."""


class DynamicGraph(Mapping[str, Mapping[str, Any]]):
    """node id -> node, over the submitted graph and the nodes expansions added."""

    def __init__(self, original: Mapping[str, Any]) -> None:
        self.original = original
        self.ephemeral: dict[str, Mapping[str, Any]] = {}
        self.parents: dict[str, str] = {}
        self.display: dict[str, str] = {}

    def __getitem__(self, node_id: str) -> Mapping[str, Any]:
        node = self.ephemeral.get(node_id)
        if node is not None:
            return node
        try:
            return self.original[node_id]
        except KeyError:
            raise NodeNotFoundError(f"Node {node_id} not found") from None

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.ephemeral or node_id in self.original

    def __iter__(self) -> Iterator[str]:
        yield from self.original
        yield from (node_id for node_id in self.ephemeral if node_id not in self.original)

    def __len__(self) -> int:
        return len(self.original) + sum(1 for node_id in self.ephemeral
                                        if node_id not in self.original)

    def add_ephemeral(self, node_id: str, node: Mapping[str, Any], parent_id: str,
                      display_id: str) -> None:
        self.ephemeral[node_id] = node
        self.parents[node_id] = parent_id
        self.display[node_id] = display_id

    def real_node_id(self, node_id: str) -> str:
        """The submitted node ``node_id`` descends from (itself when it was submitted)."""
        while node_id in self.parents:
            node_id = self.parents[node_id]
        return node_id

    def display_node_id(self, node_id: str) -> str:
        while node_id in self.display and self.display[node_id] != node_id:
            node_id = self.display[node_id]
        return node_id

    # ComfyUI's DynamicPrompt API, for nodes that take a DYNPROMPT hidden input.

    def get_node(self, node_id: str) -> Mapping[str, Any]:
        return self[node_id]

    def has_node(self, node_id: str) -> bool:
        return node_id in self

    def get_real_node_id(self, node_id: str) -> str:
        return self.real_node_id(node_id)

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.parents.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        return self.display_node_id(node_id)

    def all_node_ids(self) -> set[str]:
        return set(self)

    def get_original_prompt(self) -> Mapping[str, Any]:
        return self.original
