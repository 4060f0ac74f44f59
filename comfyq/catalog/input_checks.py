"""The checks of one node's inputs, worded as ComfyUI 0.3.64's ``validate_inputs`` words them.

Each problem is an error dict ``{"type", "message", "details", "extra_info"}`` with ComfyUI's
type names, messages, details and ``extra_info`` fields. The inputs are those the class declares
(required, then optional), in the catalog's order; a node's other inputs are not looked at, as
in ComfyUI. A literal is converted (``INT``, ``FLOAT``, ``STRING``, ``BOOLEAN``), then checked
against ``min``, ``max`` and the combo's choices; a link ``[node_id, output_index]`` is looked up
and its type compared with the input's. As in ComfyUI, an input the class's ``VALIDATE_INPUTS``
names (all of them when it takes ``**kwargs``) is only converted, and a class whose
``VALIDATE_INPUTS`` asks for ``input_types`` has its links' types unchecked (the catalog says
so: :data:`~comfyq.catalog.object_info.SELF_VALIDATION_KEY`).

A link ComfyUI cannot look up (a node id that is not in the prompt, an output index the source
class does not have) makes its lookup raise in ComfyUI, which ends the node's check: the node's
other problems are dropped and the lookup's exception is reported instead. So here:
:func:`input_errors` raises :class:`LinkLookupFailed` carrying the lookup's own exception, and
the caller reports it in ComfyUI's words (:meth:`LinkLookupFailed.inner_error`,
:meth:`LinkLookupFailed.outer_error`).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from comfyq.catalog.input_specs import ClassSpec, InputSpec

#: ComfyUI leaves combo choices out of an error (``input_config`` null) above this many.
MAX_CHOICES_IN_ERROR = 20

_MISSING = object()


class LinkLookupFailed(Exception):
    """A link could not be looked up; ``error`` is the lookup's own exception."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error

    def _exception_info(self) -> dict[str, Any]:
        error = self.error
        kind = type(error)
        module = kind.__module__
        return {"exception_type": kind.__qualname__ if module == "builtins"
                else f"{module}.{kind.__qualname__}",
                "traceback": traceback.format_tb(error.__traceback__)}

    def inner_error(self, reader: InputSpec, link: list) -> dict[str, Any]:
        """The error of a node whose lookup failed while ``reader``, an input of another
        node that links to it by ``link``, was being checked (keyed on the failing node)."""
        message = str(self.error)
        info = self._exception_info()
        return input_error(
            "exception_during_inner_validation", "Exception when validating inner node", message,
            {"input_name": reader.name, "input_config": reader.input_config(),
             "exception_message": message, "exception_type": info["exception_type"],
             "traceback": info["traceback"], "linked_node": list(link)})

    def outer_error(self) -> dict[str, Any]:
        """The error of a node whose lookup failed while it was checked on its own (an output)."""
        return input_error("exception_during_validation", "Exception when validating node",
                           str(self.error), self._exception_info())


def input_errors(spec: ClassSpec, inputs: Mapping[str, Any],
                 node_classes: Mapping[str, ClassSpec]) -> list[dict[str, Any]]:
    """The problems of one node's inputs (``node_classes``: node id -> class, for its links).

    :raises LinkLookupFailed: a link names a node or an output that does not exist.
    """
    errors = []
    for input_spec in spec.inputs:
        value = inputs.get(input_spec.name, _MISSING)
        if value is _MISSING:
            if input_spec.required:
                errors.append(input_error(
                    "required_input_missing", "Required input is missing", input_spec.name,
                    {"input_name": input_spec.name}))
            continue
        if isinstance(value, list):
            error = _link_error(input_spec, value, node_classes, spec.checks_link_types)
        else:
            error = _literal_error(input_spec, value)
        if error is not None:
            errors.append(error)
    return errors


def linked_type(link: list, node_classes: Mapping[str, ClassSpec]) -> Any:
    """The type of the output ``link`` reads, looked up as ComfyUI looks it up.

    :raises LinkLookupFailed: with the lookup's ``KeyError`` (no such node), ``IndexError``
        (no such output) or ``TypeError`` (an id or index of the wrong kind).
    """
    try:
        return node_classes[link[0]].outputs[link[1]]
    except (KeyError, IndexError, TypeError) as error:
        raise LinkLookupFailed(error) from error


def _link_error(spec: InputSpec, link: list, node_classes: Mapping[str, ClassSpec],
                check_type: bool = True) -> dict[str, Any] | None:
    name = spec.name
    if len(link) != 2:
        return input_error(
            "bad_linked_input",
            "Bad linked input, must be a length-2 list of [node_id, slot_index]", name,
            value_info(spec, link))
    received_type = linked_type(link, node_classes)
    if not check_type or spec.accepts(received_type):
        return None
    return input_error(
        "return_type_mismatch", "Return type mismatch between linked nodes",
        f"{name}, received_type({received_type}) mismatch input_type({spec.socket_type})",
        {"input_name": name, "input_config": spec.input_config(),
         "received_type": received_type, "linked_node": list(link)})


def _literal_error(spec: InputSpec, value: Any) -> dict[str, Any] | None:
    """ComfyUI's checks of a literal: conversion, then min, then max, then combo choices."""
    name = spec.name
    if isinstance(value, dict) and "__value__" in value:
        # ComfyUI's way to pass a list as a literal, since a bare list is a link.
        value = value["__value__"]
    if spec.convert is not None:
        try:
            value = spec.convert(value)
        except Exception as error:  # whatever int()/float() raise is the user's answer
            return input_error(
                "invalid_input_type",
                f"Failed to convert an input value to a {spec.socket_type} value",
                f"{name}, {value}, {error}",
                value_info(spec, value) | {"exception_message": str(error)})
    if spec.self_validated:  # the class's VALIDATE_INPUTS judges the value, as in ComfyUI
        return None
    if isinstance(value, (int, float)):
        if spec.minimum is not None and _compares(value, "<", spec.minimum):
            return input_error(
                "value_smaller_than_min", f"Value {value} smaller than min of {spec.minimum}",
                name, value_info(spec, value))
        if spec.maximum is not None and _compares(value, ">", spec.maximum):
            return input_error(
                "value_bigger_than_max", f"Value {value} bigger than max of {spec.maximum}",
                name, value_info(spec, value))
    if spec.choices is not None and not _is_choice(spec, value):
        too_many = len(spec.choices) > MAX_CHOICES_IN_ERROR
        list_info = (f"(list of length {len(spec.choices)})" if too_many
                     else str(spec.choices))
        return input_error(
            "value_not_in_list", "Value not in list", f"{name}: '{value}' not in {list_info}",
            {"input_name": name, "input_config": None if too_many else spec.input_config(),
             "received_value": value})
    return None


def _compares(value: Any, operator: str, bound: Any) -> bool:
    try:
        return value < bound if operator == "<" else value > bound
    except TypeError:  # a non-numeric bound in a hand-written catalog limits nothing
        return False


def _is_choice(spec: InputSpec, value: Any) -> bool:
    if spec.multiselect and isinstance(value, list):
        return all(_is_choice_one(spec, item) for item in value)
    return _is_choice_one(spec, value)


def _is_choice_one(spec: InputSpec, value: Any) -> bool:
    if spec.choice_set is not None:
        try:
            return value in spec.choice_set
        except TypeError:  # an unhashable value is in no set; the list says the same
            pass
    return value in spec.choices


def value_info(spec: InputSpec, value: Any) -> dict[str, Any]:
    """``extra_info`` naming the input, its config and the value it received."""
    return {"input_name": spec.name, "input_config": spec.input_config(),
            "received_value": value}


def input_error(error_type: str, message: str, details: str,
                extra_info: dict[str, Any]) -> dict[str, Any]:
    """One entry of a node's ``errors`` in ``node_errors``."""
    return {"type": error_type, "message": message, "details": details,
            "extra_info": extra_info}
