"""Calling one node the way ComfyUI does: inputs as lists, list mapping, merged results.

Every value that travels along a link is a list with one item per list element; a literal is a
one-item list. A node is called once per position of its longest input list (shorter lists
repeat their last item), unless it sets ``INPUT_IS_LIST`` and takes the whole lists in one call.
Its returns are merged back into one list per output; an output flagged in ``OUTPUT_IS_LIST``
contributes the items of the list it returned rather than the list itself.

As in ComfyUI, a literal input reaches the node only when the class declares it (required,
optional or hidden); a link reaches it whatever its name; a literal wrapped as
``{"__value__": ...}`` (how ComfyUI passes a list that is not a link) arrives unwrapped; and
hidden inputs get their values (``PROMPT``: the submitted graph, ``DYNPROMPT``: the run's
:class:`~comfyq.execution.dynamic_graph.DynamicGraph`, ``UNIQUE_ID``: the node id).

Inside a run, :func:`map_over_lists` maps a node in the run's event loop, skipping the calls an
``ExecutionBlocker`` reaches and leaving coroutines running as tasks; :func:`sort_returns` sorts
what the calls returned into outputs, ``ui`` and node expansions.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyq import graph as graph_structure
from comfyq.execution.blocking import blocker_among, is_blocker
from comfyq.execution.dynamic_graph import DynamicGraph

#: A node's results: for each output, the list of values it produced.
NodeOutputs = list[list[Any]]

_INPUT_CATEGORIES = ("required", "optional", "hidden")


class LinkedOutputMissing(ValueError):
    """A link names an output that the source node did not produce."""


@dataclass
class NodeInputs:
    """What a node is called with: each input as a list, and which links had no value yet."""

    values: dict[str, list[Any]] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)


def _hidden_value(kind: Any, node_id: str, graph: Mapping[str, Any]) -> tuple[bool, Any]:
    """ComfyUI's values for hidden inputs; ``(False, None)`` for kinds it fills from nowhere."""
    if kind == "PROMPT":
        return True, graph.original if isinstance(graph, DynamicGraph) else graph
    if kind == "UNIQUE_ID":
        return True, node_id
    if kind == "DYNPROMPT":
        return True, graph if isinstance(graph, DynamicGraph) else None
    if kind in ("EXTRA_PNGINFO", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"):
        # No browser workflow or comfy.org credentials travel with a run.
        return True, None
    return False, None


def declared_input(input_types: Mapping[str, Any], name: str) -> tuple[str | None, Mapping]:
    """The category (required/optional/hidden) of input ``name`` and its options dict."""
    for category in _INPUT_CATEGORIES:
        specs = input_types.get(category)
        if isinstance(specs, Mapping) and name in specs:
            spec = specs[name]
            options = spec[1] if (isinstance(spec, (list, tuple)) and len(spec) > 1
                                  and isinstance(spec[1], Mapping)) else {}
            return category, options
    return None, {}


def is_lazy(input_types: Mapping[str, Any], name: str) -> bool:
    """Whether input ``name`` is declared ``"lazy": True`` (evaluated only when asked for)."""
    return bool(declared_input(input_types, name)[1].get("lazy"))


def gather_inputs(node_id: str, graph: Mapping[str, Any], input_types: Mapping[str, Any],
                  results: Mapping[str, NodeOutputs] | None) -> NodeInputs:
    """The inputs of ``node_id`` as lists; links whose source has no results are ``[None]``.

    :param results: the results of the nodes run so far; None gathers literals only (every
        link counts as missing), as ComfyUI does for ``IS_CHANGED``.
    :raises LinkedOutputMissing: a link names an output its (executed) source did not produce.
    """
    node = graph[node_id]
    gathered = NodeInputs()
    for name, value in node.get("inputs", {}).items():
        category, options = declared_input(input_types, name)
        link = graph_structure.as_link(value)
        if link is not None and not options.get("rawLink"):
            outputs = None if results is None else results.get(link.source)
            if outputs is None:
                gathered.values[name] = [None]
                gathered.missing.add(name)
            elif link.output_index >= len(outputs):
                source_class = graph[link.source]["class_type"]
                raise LinkedOutputMissing(
                    f"input {name!r} reads output {link.output_index} of node {link.source} "
                    f"({source_class}), which produced {len(outputs)} output(s)")
            else:
                gathered.values[name] = outputs[link.output_index]
        elif category is not None:
            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
            gathered.values[name] = [value]
    for name, kind in (input_types.get("hidden") or {}).items():
        known, hidden = _hidden_value(kind, node_id, graph)
        if known:
            gathered.values[name] = [hidden]
    return gathered


def call_arguments(inputs: Mapping[str, list[Any]], input_is_list: bool) -> list[dict[str, Any]]:
    """The keyword arguments of each call ComfyUI makes to map a node over its input lists."""
    if input_is_list:
        return [dict(inputs)]
    if not inputs:
        return [{}]
    if any(len(values) == 0 for values in inputs.values()):
        return []
    longest = max(len(values) for values in inputs.values())
    return [{name: values[min(index, len(values) - 1)] for name, values in inputs.items()}
            for index in range(longest)]


def call_over_lists(target: Any, method_name: str, inputs: Mapping[str, list[Any]],
                    input_is_list: bool, before_each: Callable[[], None] | None = None
                    ) -> list[Any]:
    """Call ``target.method_name`` as ComfyUI maps a node over its input lists, outside any
    event loop (awaitables are run to completion one by one).

    Returns what each call returned, in order. When an input list is empty there is nothing to
    map over: the method is not called and the answer is ``[]``.

    :param before_each: called before each call (the executor's cancellation check).
    """
    method = getattr(target, method_name)
    returned = []
    for arguments in call_arguments(inputs, input_is_list):
        if before_each is not None:
            before_each()
        value = method(**arguments)
        returned.append(asyncio.run(_await(value)) if inspect.isawaitable(value) else value)
    return returned


async def map_over_lists(target: Any, method_name: str, inputs: Mapping[str, list[Any]],
                         input_is_list: bool, *,
                         before_each: Callable[[], None] | None = None,
                         on_blocked: Callable[[Any], Any] | None = None,
                         before_call: Callable[[int], None] | None = None) -> list[Any]:
    """Map ``target.method_name`` over its input lists inside the run's event loop.

    A call whose arguments carry an ``ExecutionBlocker`` is not made: its answer is the blocker
    (or what ``on_blocked`` makes of it). A coroutine starts as a task and gets one turn of the
    loop; the answer is its result when it finished in that turn, else the still running
    :class:`asyncio.Task` (see :func:`settle`), so independent async nodes run concurrently.

    :param before_call: told the index of each call about to be made (an expansion's prefix).
    """
    method = getattr(target, method_name)
    returned: list[Any] = []
    for index, arguments in enumerate(call_arguments(inputs, input_is_list)):
        if before_each is not None:
            before_each()
        blocker = blocker_among(arguments, input_is_list)
        if blocker is not None:
            returned.append(on_blocked(blocker) if on_blocked is not None else blocker)
            continue
        if before_call is not None:
            before_call(index)
        value = method(**arguments)
        if inspect.isawaitable(value):
            task = asyncio.ensure_future(value)
            await asyncio.sleep(0)
            value = task.result() if task.done() else task
        returned.append(value)
    return returned


def unfinished(returned: list[Any]) -> list[asyncio.Task]:
    """The tasks among a mapping's answers that are still running."""
    return [item for item in returned if isinstance(item, asyncio.Task) and not item.done()]


def settle(returned: list[Any]) -> list[Any]:
    """The answers with each finished task replaced by its result (raising its exception)."""
    return [item.result() if isinstance(item, asyncio.Task) else item for item in returned]


async def _await(awaitable: Any) -> Any:
    return await awaitable


@dataclass
class NodeReturn:
    """What one node's calls returned, sorted out as ComfyUI sorts it.

    :param outputs: each output's merged list (when nothing expanded).
    :param ui: the calls' ``ui`` dicts merged, or None.
    :param expansions: when any call expanded, one ``(graph or None, result)`` per call, in
        call order; the node's outputs are then resolved once the graphs have run.
    """

    outputs: NodeOutputs
    ui: dict | None
    expansions: list[tuple[Mapping[str, Any] | None, tuple]] | None = None


def sort_returns(returned: list[Any], node_class: type) -> NodeReturn:
    """Sort the calls' answers: a tuple, ``{"ui", "result"}``, ``{"result", "expand"}``, an
    ``ExecutionBlocker`` (blocking every output), or None (no results)."""
    width = len(getattr(node_class, "RETURN_TYPES", ()))
    results: list[tuple[Any, ...]] = []
    uis: list[Mapping[str, Any]] = []
    expansions: list[tuple[Mapping[str, Any] | None, tuple]] = []
    expanded = False
    for item in returned:
        if isinstance(item, Mapping):
            if item.get("ui") is not None:
                uis.append(item["ui"])
            result = item.get("result")
            if is_blocker(result):
                result = (result,) * width
            if item.get("expand") is not None:
                expanded = True
                expansions.append((item["expand"], tuple(result or ())))
            elif result is not None:
                results.append(tuple(result))
                expansions.append((None, tuple(result)))
        elif item is not None:
            result = (item,) * width if is_blocker(item) else tuple(item)
            results.append(result)
            expansions.append((None, result))
    if expanded:
        return NodeReturn([], _merge_uis(uis), expansions)
    return NodeReturn(merge_outputs(results, node_class), _merge_uis(uis))


def merge_results(returned: list[Any], node_class: type) -> tuple[NodeOutputs, dict | None]:
    """Each output's merged list, and the calls' ``ui`` dicts merged (None when there is none)."""
    sorted_out = sort_returns(returned, node_class)
    return sorted_out.outputs, sorted_out.ui


def merge_outputs(results: list[tuple[Any, ...]], node_class: type) -> NodeOutputs:
    """One list per output from the calls' result tuples; an ``OUTPUT_IS_LIST`` output joins
    the lists the calls returned (a blocked call contributes its blocker as one item)."""
    if not results:
        return [[] for _ in getattr(node_class, "RETURN_TYPES", ())]
    width = len(results[0])
    if any(len(result) != width for result in results):
        raise ValueError(f"the node returned results of different lengths "
                         f"({sorted({len(result) for result in results})}) over its list items")
    flags = list(getattr(node_class, "OUTPUT_IS_LIST", None) or [])
    flags += [False] * (width - len(flags))
    outputs: NodeOutputs = []
    for index in range(width):
        if flags[index]:
            merged: list[Any] = []
            for result in results:
                value = result[index]
                if is_blocker(value):
                    merged.append(value)
                else:
                    merged.extend(value)
            outputs.append(merged)
        else:
            outputs.append([result[index] for result in results])
    return outputs


def _merge_uis(uis: list[Mapping[str, Any]]) -> dict | None:
    if not uis:
        return None
    if len(uis) == 1:
        return dict(uis[0])
    return {name: [item for ui in uis for item in _as_list(ui.get(name, []))] for name in uis[0]}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]
