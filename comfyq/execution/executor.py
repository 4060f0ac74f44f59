"""Runs a ComfyUI API graph in this process with node classes of ComfyUI's V1 convention.

What runs, and how, follows ComfyUI's ``execution.py``:

* only output nodes (``OUTPUT_NODE = True``) and the nodes they read from run; others are skipped;
* a lazy input (``"lazy": True``) is evaluated only when the node's ``check_lazy_status`` asks
  for it, so the branch a switch does not choose never runs;
* inputs and outputs travel as lists, with ``INPUT_IS_LIST`` / ``OUTPUT_IS_LIST`` and list mapping
  (see :mod:`comfyq.execution.node_calls`);
* with a :class:`~comfyq.execution.node_cache.NodeResultCache`, results are reused across runs
  under ComfyUI's keys (class, ``IS_CHANGED``, literal inputs, ancestors' keys), so a second run
  that changes only a seed re-runs only what depends on it. Unlike ComfyUI, output nodes always
  run again and nodes that return a ``ui`` are never taken from the cache: each run writes its
  own files and no run's outputs point at another run's.

Cancellation is checked before each node and each list item (and at each progress report, see
:class:`~comfyq.run_context.ProgressBar`). The first node that raises stops the run with
a :class:`NodeExecutionError` that keeps the node id, its class and the traceback.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from comfyq import graph as graph_structure
from comfyq.execution.execution_list import ExecutionList
from comfyq.execution.node_cache import NodeResultCache, cache_keys
from comfyq.execution.node_calls import (
    NodeOutputs,
    call_over_lists,
    gather_inputs,
    is_lazy,
    merge_results,
)
from comfyq.run_context import RunCancelled, RunContext

logger = logging.getLogger(__name__)


class GraphError(Exception):
    """The graph cannot run at all (no output node, unknown node class, a cycle)."""


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


def is_output_class(node_class: type) -> bool:
    """Whether a class is an output node, tested as ComfyUI tests it (``== True``)."""
    return getattr(node_class, "OUTPUT_NODE", False) == True


def output_node_ids(graph: Mapping[str, Any], node_classes: Mapping[str, type]) -> list[str]:
    """The nodes whose class is an output node (``OUTPUT_NODE = True``)."""
    return [node_id for node_id, node in graph.items()
            if is_output_class(node_classes.get(node["class_type"], object))]


def execute_graph(graph: Mapping[str, Any], node_classes: Mapping[str, type],
                  context: RunContext, on_node_started: NodeStarted | None = None, *,
                  cache: NodeResultCache | None = None) -> dict[str, dict[str, Any]]:
    """Execute ``graph`` and return each node's ``ui`` dict, keyed by node id in run order.

    :param graph: an API-format graph whose request inputs are already applied.
    :param node_classes: class_type -> node class.
    :param context: the run being executed (must be current, see ``context.running``).
    :param on_node_started: told about each node before it runs (progress reporting); ``total``
        counts the nodes that run, so it may grow when a lazy input is asked for.
    :param cache: this worker's cache of node results across runs; None caches nothing.
    :raises GraphError: the graph has no output node, names an unknown class, links to a node
        that is not in it, or has a cycle.
    :raises NodeExecutionError: a node raised.
    :raises RunCancelled: the run was cancelled between nodes or at a progress report.
    """
    return _GraphRun(graph, node_classes, context, on_node_started, cache).execute()


class _GraphRun:
    """The state of executing one graph."""

    def __init__(self, graph: Mapping[str, Any], node_classes: Mapping[str, type],
                 context: RunContext, on_node_started: NodeStarted | None,
                 cache: NodeResultCache | None) -> None:
        self.graph = graph
        self.node_classes = node_classes
        self.context = context
        self.on_node_started = on_node_started
        self.cache = cache
        self.results: dict[str, NodeOutputs] = {}
        self.ui_outputs: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str | None] = {}
        self.executed = 0
        self._input_types: dict[str, Mapping[str, Any]] = {}
        self._instances: dict[str, Any] = {}

    # -- the whole run --

    def execute(self) -> dict[str, dict[str, Any]]:
        outputs, order = self._plan()
        if self.cache is not None:
            self.keys = cache_keys(self.graph, order, self._is_changed, self._keys_on_node_id)
        schedule = ExecutionList(self.graph, {node_id: index for index, node_id in
                                              enumerate(order)},
                                 self._is_done, self._is_lazy)
        for node_id in outputs:
            schedule.add(node_id)
        while (node_id := schedule.next_ready()) is not None:
            self.context.check_cancelled()
            if self._run_node(node_id, schedule):
                schedule.complete(node_id)
            else:
                schedule.retry_later(node_id)
        if len(schedule):
            raise GraphError("nodes wait on each other and can never run: "
                             + ", ".join(sorted(schedule.pending())))
        self.context.current_node = None
        return self.ui_outputs

    def _plan(self) -> tuple[list[str], list[str]]:
        """The output nodes, and a dependency order of every node they may read from."""
        unknown = sorted({node["class_type"] for node in self.graph.values()}
                         - set(self.node_classes))
        if unknown:
            raise GraphError(f"unknown node class(es): {', '.join(unknown)}")
        outputs = output_node_ids(self.graph, self.node_classes)
        if not outputs:
            raise GraphError("the graph has no output node (e.g. SaveImage), so nothing would run")
        for node_id, input_name, link in graph_structure.iter_links(self.graph):
            if link.source not in self.graph:
                raise GraphError(f"node {node_id} input {input_name!r} links to node "
                                 f"{link.source!r}, which is not in the graph")
        reachable = graph_structure.ancestors_and_self(self.graph, outputs)
        cycle = graph_structure.find_cycle({node_id: self.graph[node_id] for node_id in reachable})
        if cycle:
            raise GraphError("the graph has a cycle: " + " -> ".join(cycle))
        order = graph_structure.topological_order(self.graph, reachable)
        for node_id in order:
            self._describe_class(node_id)
        return outputs, order

    def _describe_class(self, node_id: str) -> None:
        """Read the class's ``INPUT_TYPES()`` once per run; a failure is that node's error."""
        class_type = self.graph[node_id]["class_type"]
        if class_type in self._input_types:
            return
        try:
            types = self.node_classes[class_type].INPUT_TYPES()
        except Exception as error:
            raise NodeExecutionError(node_id, class_type, error) from error
        self._input_types[class_type] = types if isinstance(types, Mapping) else {}

    # -- one node --

    def _run_node(self, node_id: str, schedule: ExecutionList) -> bool:
        """Run ``node_id``; False when it first needs lazy inputs (now scheduled)."""
        class_type = self.graph[node_id]["class_type"]
        node_class = self.node_classes[class_type]
        self.context.current_node = node_id
        if self.on_node_started is not None:
            self.on_node_started(node_id, class_type, self.executed, self.executed + len(schedule))
        try:
            inputs = gather_inputs(node_id, self.graph, self._types(class_type), self.results)
            instance = self._instance(node_id, node_class)
            input_is_list = bool(getattr(node_class, "INPUT_IS_LIST", False))
            wanted = self._lazy_inputs_wanted(instance, inputs, input_is_list)
            if wanted:
                for input_name in wanted:
                    schedule.require(node_id, self._lazy_source(node_id, input_name))
                return False
            returned = call_over_lists(instance, node_class.FUNCTION, inputs.values,
                                       input_is_list, self.context.check_cancelled)
            outputs, ui = merge_results(returned, node_class)
        except RunCancelled:
            raise
        except Exception as error:
            raise NodeExecutionError(node_id, class_type, error) from error
        self._keep(node_id, node_class, outputs, ui)
        self.executed += 1
        return True

    def _lazy_inputs_wanted(self, instance: Any, inputs: Any, input_is_list: bool) -> list[str]:
        if getattr(instance, "check_lazy_status", None) is None:
            return []
        answers = call_over_lists(instance, "check_lazy_status", inputs.values, input_is_list,
                                  self.context.check_cancelled)
        asked = {name for answer in answers if isinstance(answer, list) for name in answer}
        return sorted(name for name in asked if isinstance(name, str)
                      and (name not in inputs.values or name in inputs.missing))

    def _lazy_source(self, node_id: str, input_name: str) -> str:
        value = self.graph[node_id].get("inputs", {}).get(input_name)
        link = graph_structure.as_link(value)
        if link is None:
            problem = "has no such input" if value is None else "is not linked to another node"
            raise ValueError(f"check_lazy_status asked for input {input_name!r}, which {problem}")
        return link.source

    def _keep(self, node_id: str, node_class: type, outputs: NodeOutputs,
              ui: dict[str, Any] | None) -> None:
        self.results[node_id] = outputs
        if ui is not None:
            self.ui_outputs[node_id] = ui
        elif self.cache is not None and not is_output_class(node_class):
            key = self.keys.get(node_id)
            if key is not None:
                self.cache.put(key, outputs)

    # -- what the schedule and the cache keys ask --

    def _is_done(self, node_id: str) -> bool:
        """Whether ``node_id`` has results, taking them from the cache when they are there."""
        if node_id in self.results:
            return True
        key = self.keys.get(node_id)
        node_class = self.node_classes[self.graph[node_id]["class_type"]]
        if key is None or self.cache is None or is_output_class(node_class):
            return False
        cached = self.cache.get(key)
        if cached is None:
            return False
        self.results[node_id] = cached
        return True

    def _is_lazy(self, node_id: str, input_name: str) -> bool:
        return is_lazy(self._types(self.graph[node_id]["class_type"]), input_name)

    def _is_changed(self, node_id: str) -> Any:
        """What the class's ``IS_CHANGED`` says for this node (literal inputs only), or False."""
        class_type = self.graph[node_id]["class_type"]
        node_class = self.node_classes[class_type]
        if not hasattr(node_class, "IS_CHANGED"):
            return False
        try:
            inputs = gather_inputs(node_id, self.graph, self._types(class_type), None)
            return call_over_lists(node_class, "IS_CHANGED", inputs.values,
                                   bool(getattr(node_class, "INPUT_IS_LIST", False)))
        except Exception as error:  # as in ComfyUI, a failing IS_CHANGED means "re-run"
            logger.warning("IS_CHANGED of node %s (%s) failed, so it is not cached: %s",
                           node_id, class_type, error)
            return float("nan")

    def _keys_on_node_id(self, node_id: str) -> bool:
        class_type = self.graph[node_id]["class_type"]
        hidden = self._types(class_type).get("hidden") or {}
        return bool(getattr(self.node_classes[class_type], "NOT_IDEMPOTENT", False)) or (
            isinstance(hidden, Mapping) and "UNIQUE_ID" in hidden.values())

    def _types(self, class_type: str) -> Mapping[str, Any]:
        return self._input_types[class_type]

    def _instance(self, node_id: str, node_class: type) -> Any:
        """One instance per node per run, shared by ``check_lazy_status`` and the function."""
        instance = self._instances.get(node_id)
        if instance is None:
            instance = self._instances[node_id] = node_class()
        return instance
