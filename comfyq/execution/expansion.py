"""Node expansion: a node answers ``{"result": ..., "expand": graph}`` and ``graph`` runs in its
place, as ComfyUI 0.3.64 does it.

The expansion's nodes join the run (:func:`splice`); its output nodes are scheduled, and the
links in ``result`` name the nodes whose outputs stand for the expanding node's. Once those have
run, :func:`resolve` builds the expanding node's outputs from them. Expansions nest (a loop
expands into a copy of its body that expands again) and their node ids must be new to the run:
:class:`DuplicateNodeError` otherwise, as ComfyUI says it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyq import graph as graph_structure
from comfyq.execution.dynamic_graph import DynamicGraph
from comfyq.execution.node_calls import NodeOutputs, merge_outputs

#: ``(graph or None, result)`` per call of the expanding node.
Expansions = list[tuple[Mapping[str, Any] | None, tuple]]


class DuplicateNodeError(ValueError):
    """An expansion adds a node id the run already has."""


@dataclass
class Splice:
    """What joining an expansion added: the new node ids, the new output nodes among them, and
    the nodes whose outputs the expanding node's results link to."""

    node_ids: list[str] = field(default_factory=list)
    output_ids: list[str] = field(default_factory=list)
    result_sources: list[str] = field(default_factory=list)


def splice(graph: DynamicGraph, parent_id: str, expansions: Expansions,
           node_classes: Mapping[str, type], is_output: Callable[[type], bool]) -> Splice:
    """Add the nodes of each call's expansion to ``graph``, as children of ``parent_id``.

    :raises DuplicateNodeError: an expansion reuses an id the run has.
    :raises ValueError: an expansion names a class this worker does not have, or a node is not
        ``{"class_type", "inputs"}``.
    """
    added = Splice()
    for new_graph, result in expansions:
        if new_graph is None:
            continue
        for node_id in new_graph:
            if node_id in graph:
                raise DuplicateNodeError(
                    f"Attempt to add duplicate node {node_id}. Ensure node ids are unique and "
                    "deterministic or use graph_utils.GraphBuilder.")
        for node_id, node in new_graph.items():
            class_type = node.get("class_type") if isinstance(node, Mapping) else None
            if class_type not in node_classes:
                raise ValueError(f"the expansion's node {node_id} has unknown class "
                                 f"{class_type!r}")
            node = {**node, "inputs": dict(node.get("inputs") or {})}
            graph.add_ephemeral(node_id, node, parent_id,
                                node.get("override_display_id", parent_id))
            added.node_ids.append(node_id)
            if is_output(node_classes[class_type]):
                added.output_ids.append(node_id)
        for value in result:
            link = graph_structure.as_link(value)
            if link is not None:
                added.result_sources.append(link.source)
    return added


def resolve(expansions: Expansions, results: Mapping[str, NodeOutputs],
            node_class: type) -> NodeOutputs:
    """The expanding node's outputs: each link in a call's result replaced by the items of
    the output it names (ComfyUI's resolution), merged over the calls."""
    resolved: list[tuple[Any, ...]] = []
    for new_graph, result in expansions:
        if new_graph is None:
            resolved.append(result)
            continue
        items: list[Any] = []
        for value in result:
            link = graph_structure.as_link(value)
            if link is None:
                items.append(value)
            else:
                items.extend(results[link.source][link.output_index])
        resolved.append(tuple(items))
    return merge_outputs(resolved, node_class)


def prefix_graph_builder(node_id: str, call_index: int) -> None:
    """Give ComfyUI's ``GraphBuilder`` the id prefix ComfyUI gives it before each call of a
    node, when a node pack uses it (``comfy_execution.graph_utils`` is imported): expansion ids
    are then deterministic, so the nodes of an expansion are found in the cache next run."""
    graph_utils = sys.modules.get("comfy_execution.graph_utils")
    builder = getattr(graph_utils, "GraphBuilder", None)
    if builder is not None and hasattr(builder, "set_default_prefix"):
        builder.set_default_prefix(node_id, call_index, 0)
