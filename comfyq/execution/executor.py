"""Runs a ComfyUI API graph in this process with node classes of ComfyUI's V1 convention.

Only output nodes and their ancestors run, in dependency order; the first node that raises stops
the run with a :class:`NodeExecutionError` that keeps the node id, its class and the traceback.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import asyncio

from comfyq import graph as graph_structure
from comfyq.execution.context import RunCancelled, RunContext


class GraphError(Exception):
    """The graph cannot run at all (no output node, unknown node class)."""


class NodeExecutionError(Exception):
    """A node raised while executing; carries what ComfyUI's ``execution_error`` carries."""

    def __init__(self, node_id: str, class_type: str, error: BaseException) -> None:
        self.node_id = node_id
        self.class_type = class_type
        self.exception_type = f"{type(error).__module__}.{type(error).__qualname__}".removeprefix(
            "builtins."
        )
        self.exception_message = str(error)
        self.traceback = "".join(traceback.format_exception(error))
        super().__init__(
            f"node {node_id} ({class_type}) failed: {self.exception_type}: {error}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "node_type": self.class_type,
            "exception_type": self.exception_type,
            "exception_message": self.exception_message,
            "traceback": self.traceback,
        }


#: Called as (node_id, class_type, index, total) before each node runs.
NodeStarted = Callable[[str, str, int, int], None]


def output_node_ids(graph: Mapping[str, Any], node_classes: Mapping[str, type]) -> list[str]:
    """The nodes whose class is an output node (``OUTPUT_NODE = True``)."""
    return [node_id for node_id, node in graph.items()
            if getattr(node_classes.get(node["class_type"]), "OUTPUT_NODE", False)]


def execute_graph(graph: Mapping[str, Any], node_classes: Mapping[str, type],
                  context: RunContext, on_node_started: NodeStarted | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Execute ``graph`` and return each output node's ``ui`` dict, keyed by node id.

    :param graph: an API-format graph whose request inputs are already applied.
    :param node_classes: class_type -> node class.
    :param context: the run being executed (must be current, see ``context.running``).
    :param on_node_started: told about each node before it runs (progress reporting).
    :raises GraphError: the graph has no output node or names an unknown class.
    :raises NodeExecutionError: a node raised.
    :raises RunCancelled: the run was cancelled between nodes or at a progress report.
    """
    unknown = sorted({node["class_type"] for node in graph.values()} - set(node_classes))
    if unknown:
        raise GraphError(f"unknown node class(es): {', '.join(unknown)}")
    outputs = output_node_ids(graph, node_classes)
    if not outputs:
        raise GraphError("the graph has no output node (e.g. SaveImage), so nothing would run")
    order = graph_structure.topological_order(
        graph, graph_structure.ancestors_and_self(graph, outputs)
    )
    results: dict[str, tuple[Any, ...]] = {}
    ui_outputs: dict[str, dict[str, Any]] = {}
    for index, node_id in enumerate(order):
        context.check_cancelled()
        class_type = graph[node_id]["class_type"]
        context.current_node = node_id
        if on_node_started is not None:
            on_node_started(node_id, class_type, index, len(order))
        result, ui = _run_node(node_id, class_type, node_classes[class_type],
                               graph[node_id].get("inputs", {}), results)
        results[node_id] = result
        if ui is not None:
            ui_outputs[node_id] = ui
    context.current_node = None
    return ui_outputs


def _run_node(node_id: str, class_type: str, node_class: type, inputs: Mapping[str, Any],
              results: Mapping[str, tuple[Any, ...]]) -> tuple[tuple[Any, ...], dict | None]:
    arguments = {name: _resolve(value, results) for name, value in inputs.items()}
    try:
        method = getattr(node_class(), node_class.FUNCTION)
        returned = method(**arguments)
        if inspect.isawaitable(returned):
            returned = asyncio.run(_await(returned))
    except RunCancelled:
        raise
    except Exception as error:
        raise NodeExecutionError(node_id, class_type, error) from error
    return _split_result(returned)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _resolve(value: Any, results: Mapping[str, tuple[Any, ...]]) -> Any:
    link = graph_structure.as_link(value)
    if link is None:
        return value
    return results[link.source][link.output_index]


def _split_result(returned: Any) -> tuple[tuple[Any, ...], dict | None]:
    """ComfyUI nodes return a tuple, or ``{"ui": {...}, "result": (...)}``."""
    if isinstance(returned, dict):
        return tuple(returned.get("result") or ()), returned.get("ui")
    if returned is None:
        return (), None
    return tuple(returned), None
