"""Node classes' own ``VALIDATE_INPUTS``, run before a graph executes, as ComfyUI runs it.

ComfyUI calls a class's ``VALIDATE_INPUTS`` while validating a submitted prompt. comfyq's
submit check has only the workers' catalog, not their classes, so a worker runs these checks
on the graph it picked up, before any node executes (:func:`class_checks`, handed to
:func:`~comfyq.catalog.validation.check_prompt` together with the catalog checks); a graph they
refuse fails with ComfyUI's ``node_errors`` and nothing has run.

As in ComfyUI 0.3.64: the method gets the node's literal inputs it names (all of them when it
takes ``**kwargs``), converted to the input's type, and None for a linked one; ``input_types``,
when it asks for it, maps each linked input to the type of the output it reads. It may be a
coroutine. Any answer other than True (or an ``ExecutionBlocker``) is a
``custom_validation_failed`` error on each input it was given, with the answer in the details.
"""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Mapping
from typing import Any

from comfyq import graph as graph_structure
from comfyq.catalog.validation import NodeChecks
from comfyq.execution.blocking import is_blocker
from comfyq.execution.node_calls import call_arguments, declared_input, gather_inputs

_CONVERSIONS = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def class_checks(node_classes: Mapping[str, type], prompt: Mapping[str, Any]) -> NodeChecks:
    """The node checks of ``prompt``'s nodes whose classes define ``VALIDATE_INPUTS``."""

    def check(node_id: str, node: Mapping[str, Any]) -> list[dict[str, Any]]:
        node_class = node_classes.get(node["class_type"])
        validate = getattr(node_class, "VALIDATE_INPUTS", None)
        if validate is None:
            return []
        try:
            return _validate(node_id, node, node_class, validate, prompt, node_classes)
        except Exception as error:
            return [{"type": "exception_during_validation",
                     "message": "Exception when validating node", "details": str(error),
                     "extra_info": {"exception_type": type(error).__qualname__,
                                    "traceback": traceback.format_tb(error.__traceback__)}}]

    return check


def _validate(node_id: str, node: Mapping[str, Any], node_class: type, validate: Any,
              prompt: Mapping[str, Any],
              node_classes: Mapping[str, type]) -> list[dict[str, Any]]:
    spec = inspect.getfullargspec(validate)
    takes_all = spec.varkw is not None
    input_types = node_class.INPUT_TYPES()
    converted = {"class_type": node["class_type"],
                 "inputs": _converted_literals(node.get("inputs", {}), input_types)}
    gathered = gather_inputs(node_id, {node_id: converted}, input_types, None)
    arguments = {name: values for name, values in gathered.values.items()
                 if takes_all or name in spec.args}
    if "input_types" in spec.args:
        arguments["input_types"] = [_received_types(node, prompt, node_classes)]
    answers = []
    for call in call_arguments(arguments, bool(getattr(node_class, "INPUT_IS_LIST", False))):
        answer = validate(**call)
        answers.append(asyncio.run(_await(answer)) if inspect.isawaitable(answer) else answer)
    errors = []
    for name in arguments:
        for answer in answers:
            if answer is True or is_blocker(answer):
                continue
            details = name if answer is False else f"{name} - {answer}"
            errors.append({"type": "custom_validation_failed",
                           "message": "Custom validation failed for node", "details": details,
                           "extra_info": {"input_name": name}})
    return errors


def _converted_literals(inputs: Mapping[str, Any], input_types: Mapping[str, Any]) -> dict:
    """The node's inputs with each literal converted as ComfyUI converts it before validating
    (an ``INT`` input's ``"5"`` arrives as 5); one that does not convert is left as it is."""
    converted = dict(inputs)
    for name, value in inputs.items():
        if graph_structure.as_link(value) is not None:
            continue
        category, _ = declared_input(input_types, name)
        if category not in ("required", "optional"):
            continue
        spec = input_types[category][name]
        socket_type = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
        convert = _CONVERSIONS.get(socket_type) if isinstance(socket_type, str) else None
        try:
            converted[name] = convert(value) if convert is not None else value
        except (TypeError, ValueError):
            converted[name] = value
    return converted


def _received_types(node: Mapping[str, Any], prompt: Mapping[str, Any],
                    node_classes: Mapping[str, type]) -> dict[str, Any]:
    """Each linked input -> the type of the output it reads (ComfyUI's ``input_types``)."""
    types = {}
    for name, value in node.get("inputs", {}).items():
        link = graph_structure.as_link(value)
        source = prompt.get(link.source) if link is not None else None
        source_class = node_classes.get(source["class_type"]) if source else None
        return_types = getattr(source_class, "RETURN_TYPES", ())
        if link is not None and 0 <= link.output_index < len(return_types):
            types[name] = return_types[link.output_index]
    return types


async def _await(awaitable: Any) -> Any:
    return await awaitable
