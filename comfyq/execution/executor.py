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
  own files and no run's outputs point at another run's;
* a node may expand (``{"result": ..., "expand": graph}``): the graph's nodes join the run and
  its outputs stand for the node's (:mod:`comfyq.execution.expansion`); whatever fails inside is
  reported on the submitted node it came from;
* an ``ExecutionBlocker`` stops, item by item, the calls it reaches
  (:mod:`comfyq.execution.blocking`);
* a coroutine ``FUNCTION`` runs as a task in the run's event loop while other ready nodes run, so
  independent async nodes overlap, as in ComfyUI 0.3.64; of the ready nodes, async ones start
  first;
* the run's context records which nodes executed and which came from the cache
  (``executed_nodes``, ``cached_nodes``: ComfyUI's ``executing`` and ``execution_cached``).

Cancellation is checked before each node and each list item (and at each progress report, see
:class:`~comfyq.run_context.ProgressBar`). The first node that raises stops the run with
a :class:`NodeExecutionError` that keeps the node id, its class and the traceback.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import logging
import traceback
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from comfyq import graph as graph_structure
from comfyq.execution import expansion, tensors
from comfyq.execution.blocking import ExecutionBlocker
from comfyq.execution.dynamic_graph import DynamicGraph
from comfyq.execution.execution_list import ExecutionList
from comfyq.execution.node_cache import NodeResultCache, cache_keys
from comfyq.execution.node_calls import (
    NodeOutputs,
    NodeReturn,
    call_arguments,
    gather_inputs,
    is_lazy,
    map_over_lists,
    settle,
    sort_returns,
    unfinished,
)
from comfyq.run_context import RunCancelled, RunContext

logger = logging.getLogger(__name__)


class GraphError(Exception):
    """The graph cannot run at all (no output node, unknown node class, a cycle)."""


class DependencyCycleError(Exception):
    """Nodes an expansion added wait on each other (ComfyUI's ``DependencyCycleError``)."""


#: How often the run looks at its cancel flag while only async nodes are working.
ASYNC_CANCEL_CHECK_SECONDS = 0.05


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
                  cache: NodeResultCache | None = None,
                  tensor_library: str = "auto") -> dict[str, dict[str, Any]]:
    """Execute ``graph`` and return each node's ``ui`` dict, keyed by node id in run order.

    :param graph: an API-format graph whose request inputs are already applied.
    :param node_classes: class_type -> node class.
    :param context: the run being executed (must be current, see ``context.running``).
    :param on_node_started: told about each node before it runs (progress reporting); ``total``
        counts the nodes that run, so it may grow when a lazy input is asked for.
    :param cache: this worker's cache of node results across runs; None caches nothing.
    :param tensor_library: IMAGE and MASK between nodes as ``torch`` tensors on the context's
        device or ``numpy`` arrays; ``auto``: torch where it imports
        (:mod:`comfyq.execution.tensors`).
    :raises GraphError: the graph has no output node, names an unknown class, links to a node
        that is not in it, or has a cycle.
    :raises NodeExecutionError: a node raised.
    :raises RunCancelled: the run was cancelled between nodes or at a progress report.
    """
    run = _GraphRun(graph, node_classes, context, on_node_started, cache,
                    tensors.boundary(context.device, tensor_library))
    return run_coroutine(run.execute)


def run_coroutine(start: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``start()`` in an event loop of its own, in a thread of its own when this thread
    already runs a loop (the run's context variables travel along)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(start())
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="comfyq-run") as pool:
        return pool.submit(context.run, lambda: asyncio.run(start())).result()


class _Step(enum.Enum):
    """How one turn of a node ended."""

    DONE = "done"          # it has its outputs
    WAITING = "waiting"    # it asked for lazy inputs or expanded: it runs again once they are in
    WORKING = "working"    # its coroutines are still running


class _GraphRun:
    """The state of executing one graph."""

    def __init__(self, graph: Mapping[str, Any], node_classes: Mapping[str, type],
                 context: RunContext, on_node_started: NodeStarted | None,
                 cache: NodeResultCache | None, boundary: tensors.TensorBoundary) -> None:
        self.graph = DynamicGraph(graph)
        self.node_classes = node_classes
        self.context = context
        self.on_node_started = on_node_started
        self.cache = cache
        self.results: dict[str, NodeOutputs] = {}
        self.ui_outputs: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str | None] = {}
        self.started = 0
        self.tensors = boundary
        self._input_types: dict[str, Mapping[str, Any]] = {}
        self._instances: dict[str, Any] = {}
        self._priority: dict[str, tuple[int, int]] = {}
        self._working: dict[str, list[Any]] = {}
        self._expanded: dict[str, expansion.Expansions] = {}
        self._executed: set[str] = set()

    # -- the whole run --

    async def execute(self) -> dict[str, dict[str, Any]]:
        outputs, order = self._plan()
        for node_id in order:
            self._rank(node_id)
        if self.cache is not None:
            self.keys = cache_keys(self.graph, order, self._is_changed, self._keys_on_node_id)
            self._report_cached(order)
        schedule = ExecutionList(self.graph, self._priority, self._is_done, self._is_lazy)
        try:
            for node_id in outputs:
                schedule.add(node_id)
            await self._drain(schedule)
        finally:
            for returned in self._working.values():
                for task in unfinished(returned):
                    task.cancel()
        self.context.current_node = None
        return self.ui_outputs

    async def _drain(self, schedule: ExecutionList) -> None:
        while len(schedule):
            node_id = schedule.next_ready()
            if node_id is None:
                if not self._working:
                    self._raise_cycle(schedule)
                for finished in await self._finished_work():
                    schedule.retry_later(finished)
                continue
            self.context.check_cancelled()
            step = await self._turn(node_id, schedule)
            if step is _Step.DONE:
                schedule.complete(node_id)
            elif step is _Step.WAITING:
                schedule.retry_later(node_id)

    async def _finished_work(self) -> list[str]:
        """Wait until some async node's coroutines are all done; those nodes."""
        while True:
            self.context.check_cancelled()
            tasks = [task for returned in self._working.values() for task in unfinished(returned)]
            if tasks:
                await asyncio.wait(tasks, timeout=ASYNC_CANCEL_CHECK_SECONDS,
                                   return_when=asyncio.FIRST_COMPLETED)
            finished = [node_id for node_id, returned in self._working.items()
                        if not unfinished(returned)]
            if finished:
                return finished

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
            raise self._failure(node_id, error) from error
        self._input_types[class_type] = types if isinstance(types, Mapping) else {}

    def _rank(self, node_id: str) -> None:
        """Of the ready nodes, async ones start first (so they overlap with the rest), then
        the graph's dependency order decides."""
        node_class = self._class_of(node_id)
        function = getattr(node_class, getattr(node_class, "FUNCTION", ""), None)
        self._priority[node_id] = (0 if inspect.iscoroutinefunction(function) else 1,
                                   len(self._priority))

    def _report_cached(self, order: list[str]) -> None:
        cached = [node_id for node_id in order if self._is_done(node_id)]
        self.context.cached_nodes.extend(cached)
        self.context.report_cached(cached)

    def _raise_cycle(self, schedule: ExecutionList) -> None:
        """Nothing can run and nothing is working: the pending nodes wait on each other."""
        pending = set(schedule.pending())
        cycle = graph_structure.find_cycle({node_id: self.graph[node_id] for node_id in pending})
        cycled = cycle[:-1] if cycle else sorted(pending)
        blamed = next((self.graph.display_node_id(node_id) for node_id in cycled
                       if self.graph.display_node_id(node_id) != node_id), cycled[0])
        raise self._failure(blamed, DependencyCycleError("Dependency cycle detected"))

    # -- one node --

    async def _turn(self, node_id: str, schedule: ExecutionList) -> _Step:
        """One turn of ``node_id``: run it, or finish what its coroutines or expansion began."""
        node_class = self._class_of(node_id)
        self.context.current_node = node_id
        try:
            if node_id in self._working:
                returned = settle(self._working.pop(node_id))
                return self._returned(node_id, node_class, sort_returns(returned, node_class),
                                      schedule)
            if node_id in self._expanded:
                outputs = expansion.resolve(self._expanded.pop(node_id), self.results,
                                            node_class)
                self._keep(node_id, node_class, outputs, None)
                return _Step.DONE
            return await self._run(node_id, node_class, schedule)
        except RunCancelled:
            raise
        except NodeExecutionError:
            raise
        except Exception as error:
            raise self._failure(node_id, error) from error

    async def _run(self, node_id: str, node_class: type, schedule: ExecutionList) -> _Step:
        class_type = self.graph[node_id]["class_type"]
        self._record_executed(node_id)
        if self.on_node_started is not None:
            self.on_node_started(node_id, class_type, self.started,
                                 self.started + len(schedule))
        inputs = gather_inputs(node_id, self.graph, self._types(class_type), self.results)
        instance = self._instance(node_id, node_class)
        input_is_list = bool(getattr(node_class, "INPUT_IS_LIST", False))
        wanted = await self._lazy_inputs_wanted(instance, inputs, input_is_list)
        if wanted:
            for input_name in wanted:
                schedule.require(node_id, self._lazy_source(node_id, input_name))
            return _Step.WAITING
        returned = await map_over_lists(
            instance, node_class.FUNCTION, inputs.values, input_is_list,
            before_each=self.context.check_cancelled,
            on_blocked=lambda blocker: self._blocked(node_id, class_type, blocker),
            before_call=lambda index: expansion.prefix_graph_builder(node_id, index))
        self.started += 1
        if unfinished(returned):
            self._working[node_id] = returned
            return _Step.WORKING
        return self._returned(node_id, node_class, sort_returns(returned, node_class), schedule)

    def _returned(self, node_id: str, node_class: type, answer: NodeReturn,
                  schedule: ExecutionList) -> _Step:
        if answer.expansions is None:
            self._keep(node_id, node_class, answer.outputs, answer.ui)
            return _Step.DONE
        if answer.ui is not None:
            self.ui_outputs[node_id] = answer.ui
        added = expansion.splice(self.graph, node_id, answer.expansions, self.node_classes,
                                 is_output_class)
        for new_id in added.node_ids:
            self._describe_class(new_id)
            self._rank(new_id)
        if self.cache is not None:
            self._key_expansion(added.node_ids)
        self._expanded[node_id] = answer.expansions
        for output_id in added.output_ids:
            schedule.add(output_id)
        for source in added.result_sources:
            schedule.require(node_id, source)
        return _Step.WAITING

    def _key_expansion(self, node_ids: list[str]) -> None:
        """Cache keys for an expansion's nodes; none when they link in a cycle (only lazy
        inputs never asked for can make such an expansion run at all)."""
        added = {node_id: self.graph[node_id] for node_id in node_ids}
        if graph_structure.find_cycle(added):
            self.keys.update(dict.fromkeys(node_ids))
            return
        order = graph_structure.topological_order(added, set(node_ids))
        self.keys.update(cache_keys(self.graph, order, self._is_changed, self._keys_on_node_id,
                                    known=self.keys))

    def _blocked(self, node_id: str, class_type: str, blocker: Any) -> Any:
        """A blocker reached one call of ``node_id``; one with a message is reported once."""
        if blocker.message is None:
            return blocker
        self.context.blocked_nodes.append({
            "node_id": self.graph.real_node_id(node_id), "node_type": class_type,
            "exception_message": f"Execution Blocked: {blocker.message}",
            "exception_type": "ExecutionBlocked"})
        return ExecutionBlocker(None)

    async def _lazy_inputs_wanted(self, instance: Any, inputs: Any,
                                  input_is_list: bool) -> list[str]:
        if getattr(instance, "check_lazy_status", None) is None:
            return []
        returned = await map_over_lists(instance, "check_lazy_status", inputs.values,
                                        input_is_list, before_each=self.context.check_cancelled)
        tasks = unfinished(returned)
        if tasks:
            await asyncio.gather(*tasks)
        answers = settle(returned)
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
        outputs = self.tensors.outputs(outputs, getattr(node_class, "RETURN_TYPES", ()))
        self.results[node_id] = outputs
        if ui is not None:
            self.ui_outputs[node_id] = ui
        elif self.cache is not None and not is_output_class(node_class):
            key = self.keys.get(node_id)
            if key is not None:
                self.cache.put(key, outputs)

    def _record_executed(self, node_id: str) -> None:
        if node_id not in self._executed:
            self._executed.add(node_id)
            self.context.executed_nodes.append(node_id)

    def _failure(self, node_id: str, error: BaseException) -> NodeExecutionError:
        """The run's error for ``error`` raised by ``node_id``: reported on the submitted node
        it descends from, as ComfyUI reports errors inside expansions."""
        real_id = self.graph.real_node_id(node_id)
        return NodeExecutionError(real_id, self.graph[real_id]["class_type"], error)

    # -- what the schedule and the cache keys ask --

    def _is_done(self, node_id: str) -> bool:
        """Whether ``node_id`` has results, taking them from the cache when they are there."""
        if node_id in self.results:
            return True
        key = self.keys.get(node_id)
        node_class = self._class_of(node_id)
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
            return call_synchronously(node_class, "IS_CHANGED", inputs.values,
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

    def _class_of(self, node_id: str) -> type:
        return self.node_classes[self.graph[node_id]["class_type"]]

    def _instance(self, node_id: str, node_class: type) -> Any:
        """One instance per node per run, shared by ``check_lazy_status`` and the function."""
        instance = self._instances.get(node_id)
        if instance is None:
            instance = self._instances[node_id] = node_class()
        return instance


def call_synchronously(target: Any, method_name: str, inputs: Mapping[str, list[Any]],
                       input_is_list: bool) -> list[Any]:
    """Map a method that must answer at once (``IS_CHANGED``) over its input lists; one that
    answers with a coroutine is not cacheable here (NaN: "always re-run")."""
    answers = []
    for arguments in call_arguments(inputs, input_is_list):
        answer = getattr(target, method_name)(**arguments)
        if inspect.isawaitable(answer):
            if inspect.iscoroutine(answer):
                answer.close()
            return [float("nan")]
        answers.append(answer)
    return answers
