"""The structure of a ComfyUI API-format graph: nodes, links, dependency order and cycles.

A graph maps node id -> ``{"class_type": str, "inputs": {...}}``. An input value is a literal or
a link ``[source_node_id, output_index]``. This module knows nothing of node classes; checking a
graph against a node catalog lives in :mod:`comfyq.catalog.validation`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Link:
    """An input fed by output ``output_index`` of node ``source``."""

    source: str
    output_index: int


def as_link(value: Any) -> Link | None:
    """The link an input value denotes, or None for a literal.

    ComfyUI takes any two-item list whose first item is a string node id and second an int as a
    link; so do we (bool is not an int here).
    """
    return Link(value[0], value[1]) if _is_link(value) else None


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def iter_list_inputs(graph: Mapping[str, Any]) -> Iterator[tuple[str, str, list]]:
    """Yield ``(node_id, input_name, value)`` for every input whose value is a list.

    ComfyUI's validation reads every list in a node's inputs as a link (a list literal is
    written ``{"__value__": [...]}``), so each of these must be a well-formed link.
    """
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        for name, value in inputs.items():
            if isinstance(value, list):
                yield node_id, name, value


def link_shape_problem(value: list) -> str | None:
    """Why a list input is not a link ``[node_id, output_index]`` ComfyUI can look up; None
    when it is one (whether that node exists is another question)."""
    if len(value) != 2:
        return (f"a link must be [node_id, output_index], a list of 2 items; got {len(value)} "
                "(write a list value as {\"__value__\": [...]})")
    node_id, index = value
    if not isinstance(node_id, str):
        return f"a link's node id must be a string, like \"{node_id}\"; got {node_id!r}"
    if not isinstance(index, int) or isinstance(index, bool):
        return f"a link's output index must be an integer; got {index!r}"
    if index < 0:
        return f"output index {index} is negative"
    return None


def iter_links(graph: Mapping[str, Any]) -> Iterator[tuple[str, str, Link]]:
    """Yield ``(node_id, input_name, link)`` for every link of every node."""
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        for name, value in inputs.items():
            link = as_link(value)
            if link is not None:
                yield node_id, name, link


def dependencies(graph: Mapping[str, Any], node_id: str) -> list[str]:
    """The distinct node ids that ``node_id`` reads from, in input order."""
    node = graph[node_id]
    inputs = node.get("inputs") if type(node) is dict or isinstance(node, Mapping) else None
    if not (type(inputs) is dict or isinstance(inputs, Mapping)):
        return []
    # The isinstance test first spares a call for every literal, most of a graph's inputs.
    sources = [value[0] for value in inputs.values()
               if isinstance(value, list) and _is_link(value)]
    return list(dict.fromkeys(sources)) if len(sources) > 1 else sources


def find_cycle(graph: Mapping[str, Any]) -> list[str] | None:
    """A cycle as a list of node ids (first == last), or None when the graph is acyclic.

    Links to nodes that do not exist are ignored here; they are reported on their own.
    """
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    for root in graph:
        if color[root] != white:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(_existing_deps(graph, root)))]
        path = [root]
        color[root] = grey
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                color[node] = black
                stack.pop()
                path.pop()
            elif color[child] == grey:
                return path[path.index(child):] + [child]
            elif color[child] == white:
                color[child] = grey
                path.append(child)
                stack.append((child, iter(_existing_deps(graph, child))))
    return None


def _existing_deps(graph: Mapping[str, Any], node_id: str) -> list[str]:
    return [dep for dep in dependencies(graph, node_id) if dep in graph]


def ancestors_and_self(graph: Mapping[str, Any], roots: Iterable[str]) -> set[str]:
    """Every node that ``roots`` depend on, directly or not, plus the roots."""
    return _reachable(graph, roots, lambda node: dependencies(graph, node))


def descendants_of_each(graph: Mapping[str, Any], nodes: Iterable[str]) -> dict[str, set[str]]:
    """For each of ``nodes``, every node that depends on it, directly or not, plus itself."""
    readers = _readers(graph)
    return {node: _reachable(graph, [node], lambda current: readers.get(current, ()))
            for node in nodes}


def _readers(graph: Mapping[str, Any]) -> dict[str, list[str]]:
    """node id -> the nodes that read from it."""
    readers: dict[str, list[str]] = {}
    for node_id, _, link in iter_links(graph):
        readers.setdefault(link.source, []).append(node_id)
    return readers


def _reachable(graph: Mapping[str, Any], roots: Iterable[str],
               neighbours: Callable[[str], Iterable[str]]) -> set[str]:
    """The nodes of ``graph`` reached from ``roots`` (included) by following ``neighbours``."""
    reached: set[str] = set()
    pending = list(roots)
    while pending:
        node = pending.pop()
        if node in reached or node not in graph:
            continue
        reached.add(node)
        pending.extend(neighbours(node))
    return reached


def topological_order(graph: Mapping[str, Any], nodes: set[str]) -> list[str]:
    """``nodes`` ordered so that each comes after everything it reads from (graph must be acyclic).

    Ties keep the graph's own key order, so runs are reproducible.
    """
    order: list[str] = []
    placed: set[str] = set()

    def place(node: str) -> None:
        stack = [(node, iter(dependencies(graph, node)))]
        while stack:
            current, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                stack.pop()
                if current not in placed:
                    placed.add(current)
                    order.append(current)
            elif dep in nodes and dep not in placed:
                stack.append((dep, iter(dependencies(graph, dep))))

    for node in graph:
        if node in nodes and node not in placed:
            place(node)
    return order
