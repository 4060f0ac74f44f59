"""Calling one node the way ComfyUI does: inputs as lists, list mapping, merged results.

Every value that travels along a link is a list with one item per list element; a literal is a
one-item list. A node is called once per position of its longest input list (shorter lists
repeat their last item), unless it sets ``INPUT_IS_LIST`` and takes the whole lists in one call.
Its returns are merged back into one list per output; an output flagged in ``OUTPUT_IS_LIST``
contributes the items of the list it returned rather than the list itself.

As in ComfyUI, a literal input reaches the node only when the class declares it (required,
optional or hidden); a link reaches it whatever its name; a literal wrapped as
``{"__value__": ...}`` (how ComfyUI passes a list that is not a link) arrives unwrapped; and
hidden inputs get their values (``PROMPT``: the graph, ``UNIQUE_ID``: the node id).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyq import graph as graph_structure

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
        return True, graph
    if kind == "UNIQUE_ID":
        return True, node_id
    if kind in ("EXTRA_PNGINFO", "DYNPROMPT", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"):
        # No browser workflow, dynamic prompt or comfy.org credentials travel with a run.
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


def call_over_lists(target: Any, method_name: str, inputs: Mapping[str, list[Any]],
                    input_is_list: bool, before_each: Callable[[], None] | None = None
                    ) -> list[Any]:
    """Call ``target.method_name`` as ComfyUI maps a node over its input lists.

    Returns what each call returned (awaitables awaited), in order. When an input list is
    empty there is nothing to map over: the method is not called and the answer is ``[]``.

    :param before_each: called before each call (the executor's cancellation check).
    """
    method = getattr(target, method_name)
    if input_is_list:
        calls: list[dict[str, Any]] = [dict(inputs)]
    elif not inputs:
        calls = [{}]
    elif any(len(values) == 0 for values in inputs.values()):
        calls = []
    else:
        longest = max(len(values) for values in inputs.values())
        calls = [{name: values[min(index, len(values) - 1)] for name, values in inputs.items()}
                 for index in range(longest)]
    returned = []
    for arguments in calls:
        if before_each is not None:
            before_each()
        returned.append(_awaited(method(**arguments)))
    return returned


def _awaited(value: Any) -> Any:
    if inspect.isawaitable(value):
        return asyncio.run(_await(value))
    return value


async def _await(awaitable: Any) -> Any:
    return await awaitable


def merge_results(returned: list[Any], node_class: type) -> tuple[NodeOutputs, dict | None]:
    """Each output's merged list, and the calls' ``ui`` dicts merged (None when there is none).

    A call returns a tuple, or ``{"ui": {...}, "result": (...)}``, or None (no results).
    """
    results: list[tuple[Any, ...]] = []
    uis: list[Mapping[str, Any]] = []
    for item in returned:
        if isinstance(item, Mapping):
            if item.get("ui") is not None:
                uis.append(item["ui"])
            if item.get("result") is not None:
                results.append(tuple(item["result"]))
        elif item is not None:
            results.append(tuple(item))
    return _merge_outputs(results, node_class), _merge_uis(uis)


def _merge_outputs(results: list[tuple[Any, ...]], node_class: type) -> NodeOutputs:
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
            outputs.append([item for result in results for item in result[index]])
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
