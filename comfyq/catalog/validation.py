"""Submit-time validation of an API-format graph against a node catalog, as ComfyUI does it.

:func:`validate_prompt` follows ComfyUI 0.3.64's ``validate_prompt``/``validate_inputs``: the
same rules, error type names, messages, value conversions and HTTP 400 body, so a client that
understands ComfyUI's answer understands ours. It checks a catalog (``/object_info`` JSON), not
live classes, and goes further where ComfyUI is weak:

* a link to a node that is not in the graph (``link_to_missing_node``) or to an output index the
  source class does not have (``link_output_out_of_range``) gets its own error instead of an
  exception report; a malformed link is a ``bad_linked_input``;
* a dependency cycle anywhere in the graph is found and named (``dependency_cycle``);
* the graph is refused when ANY output is invalid (ComfyUI silently drops bad outputs when some
  are good), with every bad node in ``node_errors`` and, in ``dependent_outputs``, exactly the
  output nodes that depend on it;
* every problem of every checked node is reported, including those behind a bad link, and the
  top-level ``details`` lists them all (ComfyUI lists only the output nodes' own problems);
* combos of the newer ``["COMBO", {"options": [...]}]`` form are checked like list combos.

What a catalog cannot tell is left to the worker: combos that take uploads (``image_upload``
and the like) or fetch their choices remotely accept any value, because ComfyUI checks those with
the class's own ``VALIDATE_INPUTS`` (the file must exist on the machine that runs the graph), and
``VALIDATE_INPUTS`` itself is not run here.

Catalogs are compiled once into per-class input specs (:func:`compile_catalog`, cached by the
catalog's identity), so treat a catalog as immutable once it has been validated against.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyq import graph as graph_structure
from comfyq.catalog.object_info import WILDCARD_TYPE
from comfyq.errors import ComfyqError

#: ComfyUI leaves combo choices out of an error (``input_config`` null) above this many.
MAX_CHOICES_IN_ERROR = 20

_CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    "INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
_MISSING = object()


class PromptValidationError(ComfyqError, ValueError):
    """The graph was refused; ``body`` is ComfyUI's HTTP 400 answer, ``str()`` a summary.

    ``body`` is ``{"error": {"type", "message", "details", "extra_info"}, "node_errors":
    {node_id: {"errors": [...], "dependent_outputs": [...], "class_type": ...}}}``.
    """

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        super().__init__(_summary(body))

    @property
    def error_type(self) -> str:
        """The top-level error type, such as ``prompt_outputs_failed_validation``."""
        return self.body["error"]["type"]

    @property
    def node_errors(self) -> dict[str, dict[str, Any]]:
        return self.body["node_errors"]


# --- compiled catalogs --------------------------------------------------------------------------

@dataclass(slots=True)
class InputSpec:
    """One input socket or widget of a class, prepared for fast checking."""

    name: str
    required: bool
    socket_type: Any
    config: Mapping[str, Any]
    convert: Callable[[Any], Any] | None
    minimum: Any
    maximum: Any
    choices: list | None
    choice_set: frozenset | None
    is_combo: bool
    multiselect: bool
    wildcard: bool
    type_members: frozenset[str]
    accepts_cache: dict[str, bool] = field(default_factory=dict)

    def input_config(self) -> list:
        """ComfyUI's ``input_config``: ``[type, options]``, a copy safe to hand out."""
        return copy.deepcopy([self.socket_type, dict(self.config)])

    def accepts(self, received_type: Any) -> bool:
        """Whether an output of ``received_type`` may feed this input."""
        if isinstance(received_type, str):
            known = self.accepts_cache.get(received_type)
            if known is None:
                known = self.accepts_cache[received_type] = self._accepts(received_type)
            return known
        return self._accepts(received_type)

    def _accepts(self, received_type: Any) -> bool:
        if received_type == self.socket_type or self.wildcard:
            return True
        if isinstance(received_type, str):
            members = _type_members(received_type)
            return WILDCARD_TYPE in members or not members.isdisjoint(self.type_members)
        # A combo-valued output (a list of choices) may feed a combo input.
        return self.is_combo and isinstance(received_type, list)


@dataclass(slots=True)
class ClassSpec:
    """What validation needs of one node class."""

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[Any, ...]
    output_node: bool


class CompiledCatalog:
    """A catalog prepared for validation; build one with :func:`compile_catalog` and keep it."""

    __slots__ = ("catalog", "classes")

    def __init__(self, catalog: Mapping[str, Any]) -> None:
        self.catalog = catalog
        self.classes: dict[str, ClassSpec] = {
            name: _compile_class(name, entry) for name, entry in catalog.items()
            if isinstance(entry, Mapping)}

    def validate(self, prompt: Mapping[str, Any]) -> None:
        """:func:`validate_prompt` against this catalog."""
        _Validation(prompt, self.classes).run()


def _type_members(socket_type: str) -> frozenset[str]:
    return frozenset(member.strip() for member in socket_type.split(","))


def _compile_input(name: str, spec: Any, required: bool) -> InputSpec:
    spec = spec if isinstance(spec, (list, tuple)) and spec else [spec]
    socket_type = spec[0]
    config = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    is_combo = isinstance(socket_type, list) or socket_type == "COMBO"
    choices = socket_type if isinstance(socket_type, list) else config.get("options")
    if not is_combo or not isinstance(choices, list) or _takes_uploads(config):
        choices = None
    try:
        choice_set = frozenset(choices) if choices is not None else None
    except TypeError:  # unhashable choices are searched in the list
        choice_set = None
    members = _type_members(socket_type) if isinstance(socket_type, str) else frozenset()
    return InputSpec(
        name=name, required=required, socket_type=socket_type, config=config,
        convert=_CONVERSIONS.get(socket_type) if isinstance(socket_type, str) else None,
        minimum=config.get("min"), maximum=config.get("max"),
        choices=choices, choice_set=choice_set, is_combo=is_combo,
        multiselect=bool(config.get("multiselect")) or bool(config.get("multi_select")),
        wildcard=WILDCARD_TYPE in members, type_members=members)


def _takes_uploads(config: Mapping[str, Any]) -> bool:
    """Whether a combo's choices are only a hint: uploads or remote lists add to them."""
    return "remote" in config or any(
        key.endswith("_upload") and value for key, value in config.items())


def _compile_class(name: str, entry: Mapping[str, Any]) -> ClassSpec:
    input_types = entry.get("input") if isinstance(entry.get("input"), Mapping) else {}
    inputs = []
    for category in ("required", "optional"):
        specs = input_types.get(category)
        if isinstance(specs, Mapping):
            inputs += [_compile_input(input_name, spec, category == "required")
                       for input_name, spec in specs.items()]
    outputs = entry.get("output")
    return ClassSpec(name=name, inputs=tuple(inputs),
                     outputs=tuple(outputs) if isinstance(outputs, list) else (),
                     output_node=entry.get("output_node") is True)


_CACHE_SIZE = 16
_cache: dict[int, tuple[Mapping[str, Any], CompiledCatalog]] = {}
_cache_lock = threading.Lock()


def compile_catalog(catalog: Mapping[str, Any] | CompiledCatalog) -> CompiledCatalog:
    """``catalog`` compiled for validation; the same catalog object is compiled only once."""
    if isinstance(catalog, CompiledCatalog):
        return catalog
    cached = _cache.get(id(catalog))
    if cached is not None and cached[0] is catalog:
        return cached[1]
    compiled = CompiledCatalog(catalog)
    with _cache_lock:
        while len(_cache) >= _CACHE_SIZE:
            del _cache[next(iter(_cache))]
        _cache[id(catalog)] = (catalog, compiled)
    return compiled


def validate_prompt(prompt: Mapping[str, Any],
                    catalog: Mapping[str, Any] | CompiledCatalog) -> None:
    """Refuse ``prompt`` with :class:`PromptValidationError` unless every output can run.

    ``catalog`` is an ``/object_info`` catalog or a :class:`CompiledCatalog`. The prompt is
    not modified (ComfyUI writes converted values back; the executor converts for itself).
    """
    compile_catalog(catalog).validate(prompt)


# --- one validation -----------------------------------------------------------------------------

class _Validation:
    """The state of validating one prompt."""

    def __init__(self, prompt: Mapping[str, Any], classes: dict[str, ClassSpec]) -> None:
        self.prompt = prompt
        self.classes = classes
        self.node_classes: dict[str, ClassSpec] = {}
        self.deps: dict[str, list[str]] = {}

    def run(self) -> None:
        self._index_nodes()
        outputs = [node_id for node_id, spec in self.node_classes.items() if spec.output_node]
        if not outputs:
            raise PromptValidationError(_prompt_error(
                "prompt_no_outputs", "Prompt has no outputs", ""))
        needed = self._ancestors(outputs)
        problems: dict[str, list[dict]] = {}
        for node_id, spec in self.node_classes.items():
            if node_id in needed:
                errors = self._node_errors(node_id, spec)
                if errors:
                    problems[node_id] = errors
        if self._has_cycle():
            self._add_cycle_errors(problems)
        if problems:
            raise PromptValidationError(self._failure_body(problems, outputs))

    def _index_nodes(self) -> None:
        """Find every node's class (refusing the prompt on an unknown one) and its links."""
        if not isinstance(self.prompt, Mapping):
            raise PromptValidationError(_prompt_error(
                "invalid_prompt", "The prompt must be an object mapping node ids to nodes.",
                f"got {type(self.prompt).__name__}"))
        for node_id, node in self.prompt.items():
            if not isinstance(node, Mapping) or "class_type" not in node:
                raise PromptValidationError(_prompt_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'"))
            class_type = node["class_type"]
            spec = self.classes.get(class_type) if isinstance(class_type, str) else None
            if spec is None:
                raise PromptValidationError(_prompt_error(
                    "invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'"))
            inputs = node.get("inputs", {})
            if not isinstance(inputs, Mapping):
                raise PromptValidationError(_prompt_error(
                    "invalid_prompt", "Cannot execute because a node's inputs are not an object.",
                    f"Node ID '#{node_id}'"))
            self.node_classes[node_id] = spec
            self.deps[node_id] = [
                value[0] for value in inputs.values()
                if type(value) is list and len(value) == 2 and type(value[0]) is str
                and type(value[1]) is int and value[0] in self.prompt]

    def _ancestors(self, outputs: list[str]) -> set[str]:
        needed: set[str] = set()
        pending = list(outputs)
        deps = self.deps
        while pending:
            node_id = pending.pop()
            if node_id not in needed:
                needed.add(node_id)
                pending.extend(deps[node_id])
        return needed

    def _has_cycle(self) -> bool:
        """Whether the links form a cycle (cheap; :func:`find_cycle` then names it)."""
        done: set[str] = set()
        deps = self.deps
        for root in deps:
            if root in done:
                continue
            on_path = {root}
            stack = [(root, iter(deps[root]))]
            while stack:
                node_id, children = stack[-1]
                for child in children:
                    if child in on_path:
                        return True
                    if child not in done:
                        on_path.add(child)
                        stack.append((child, iter(deps[child])))
                        break
                else:
                    stack.pop()
                    on_path.discard(node_id)
                    done.add(node_id)
        return False

    # -- one node --

    def _node_errors(self, node_id: str, spec: ClassSpec) -> list[dict]:
        inputs = self.prompt[node_id].get("inputs", {})
        errors = []
        for input_spec in spec.inputs:
            value = inputs.get(input_spec.name, _MISSING)
            if value is _MISSING:
                if input_spec.required:
                    errors.append(_input_error(
                        "required_input_missing", "Required input is missing", input_spec.name,
                        {"input_name": input_spec.name}))
                continue
            if isinstance(value, list):
                error = self._link_error(input_spec, value)
            else:
                error = _literal_error(input_spec, value)
            if error is not None:
                errors.append(error)
        return errors

    def _link_error(self, spec: InputSpec, link: list) -> dict | None:
        name = spec.name
        if (len(link) != 2 or type(link[0]) is not str or type(link[1]) is not int):
            return _input_error(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]", name,
                _value_info(spec, link))
        source_id, index = link
        source = self.node_classes.get(source_id)
        if source is None:
            return _input_error(
                "link_to_missing_node", "Linked node does not exist",
                f"{name}: node '{source_id}' is not in the prompt",
                _value_info(spec, link) | {"linked_node": list(link)})
        if not 0 <= index < len(source.outputs):
            count = len(source.outputs)
            return _input_error(
                "link_output_out_of_range", "Linked output index is out of range",
                f"{name}: node '{source_id}' ({source.name}) has {count} "
                f"output{'s' * (count != 1)}, output {index} requested",
                _value_info(spec, link) | {"linked_node": list(link)})
        received_type = source.outputs[index]
        if spec.accepts(received_type):
            return None
        return _input_error(
            "return_type_mismatch", "Return type mismatch between linked nodes",
            f"{name}, received_type({received_type}) mismatch input_type({spec.socket_type})",
            {"input_name": name, "input_config": spec.input_config(),
             "received_type": received_type, "linked_node": list(link)})

    # -- cycles and the answer --

    def _add_cycle_errors(self, problems: dict[str, list[dict]]) -> None:
        found = graph_structure.find_cycle(self.prompt) or []
        # find_cycle lists each node before the node it reads from; show the way data flows.
        flow = list(reversed(found))
        readable = " -> ".join(flow)
        for position, node_id in enumerate(flow[1:], start=1):
            source_id = flow[position - 1]
            input_name, link = self._input_reading_from(node_id, source_id)
            spec = next((item for item in self.node_classes[node_id].inputs
                         if item.name == input_name), None)
            extra: dict[str, Any] = {
                "input_name": input_name,
                "input_config": spec.input_config() if spec is not None else None,
                "received_value": link, "cycle": flow}
            problems.setdefault(node_id, []).append(_input_error(
                "dependency_cycle", "Node is part of a dependency cycle",
                f"{input_name}: {readable}", extra))

    def _input_reading_from(self, node_id: str, source_id: str) -> tuple[str, list]:
        for name, value in self.prompt[node_id].get("inputs", {}).items():
            link = graph_structure.as_link(value)
            if link is not None and link.source == source_id:
                return name, list(value)
        raise AssertionError(f"node {node_id} has no link from {source_id}")

    def _failure_body(self, problems: dict[str, list[dict]], outputs: list[str]) -> dict:
        dependents = self._dependents()
        output_set = set(outputs)
        ordered = [node_id for node_id in self.prompt if node_id in problems]
        node_errors = {
            node_id: {
                "errors": problems[node_id],
                "dependent_outputs": self._outputs_depending_on(node_id, dependents, output_set),
                "class_type": self.prompt[node_id]["class_type"],
            }
            for node_id in ordered}
        details = "\n".join(f"{error['message']}: {error['details']}"
                            for node_id in ordered for error in problems[node_id])
        body = _prompt_error("prompt_outputs_failed_validation",
                             "Prompt outputs failed validation", details)
        body["node_errors"] = node_errors
        return body

    def _dependents(self) -> dict[str, list[str]]:
        dependents: dict[str, list[str]] = {node_id: [] for node_id in self.deps}
        for node_id, sources in self.deps.items():
            for source_id in sources:
                dependents[source_id].append(node_id)
        return dependents

    def _outputs_depending_on(self, node_id: str, dependents: dict[str, list[str]],
                              outputs: set[str]) -> list[str]:
        reached: set[str] = set()
        pending = [node_id]
        while pending:
            current = pending.pop()
            if current not in reached:
                reached.add(current)
                pending.extend(dependents[current])
        return [candidate for candidate in self.prompt if candidate in outputs
                and candidate in reached]


def _literal_error(spec: InputSpec, value: Any) -> dict | None:
    """ComfyUI's checks of a literal: conversion, then min, then max, then combo choices."""
    name = spec.name
    if isinstance(value, dict) and "__value__" in value:
        # ComfyUI's way to pass a list as a literal, since a bare list is a link.
        value = value["__value__"]
    if spec.convert is not None:
        try:
            value = spec.convert(value)
        except Exception as error:  # whatever int()/float() raise is the user's answer
            return _input_error(
                "invalid_input_type",
                f"Failed to convert an input value to a {spec.socket_type} value",
                f"{name}, {value}, {error}",
                _value_info(spec, value) | {"exception_message": str(error)})
    if isinstance(value, (int, float)):
        if spec.minimum is not None and _compares(value, "<", spec.minimum):
            return _input_error(
                "value_smaller_than_min", f"Value {value} smaller than min of {spec.minimum}",
                name, _value_info(spec, value))
        if spec.maximum is not None and _compares(value, ">", spec.maximum):
            return _input_error(
                "value_bigger_than_max", f"Value {value} bigger than max of {spec.maximum}",
                name, _value_info(spec, value))
    if spec.choices is not None and not _is_choice(spec, value):
        too_many = len(spec.choices) > MAX_CHOICES_IN_ERROR
        list_info = (f"(list of length {len(spec.choices)})" if too_many
                     else str(spec.choices))
        return _input_error(
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


def _value_info(spec: InputSpec, value: Any) -> dict[str, Any]:
    return {"input_name": spec.name, "input_config": spec.input_config(),
            "received_value": value}


def _input_error(error_type: str, message: str, details: str,
                 extra_info: dict[str, Any]) -> dict[str, Any]:
    return {"type": error_type, "message": message, "details": details,
            "extra_info": extra_info}


def _prompt_error(error_type: str, message: str, details: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message, "details": details,
                      "extra_info": {}},
            "node_errors": {}}


# --- the readable summary -----------------------------------------------------------------------

def _summary(body: Mapping[str, Any]) -> str:
    error = body["error"]
    node_errors = body.get("node_errors") or {}
    if not node_errors:
        details = f" ({error['details']})" if error.get("details") else ""
        return f"{error['message']}{details}"
    parts = [_describe(node_id, entry["class_type"], item)
             for node_id, entry in node_errors.items() for item in entry["errors"]]
    count = len(parts)
    return (f"{error['message']} ({count} problem{'s' * (count != 1)}): "
            + "; ".join(parts) + ".")


def _describe(node_id: str, class_type: str, error: Mapping[str, Any]) -> str:
    input_name = error.get("extra_info", {}).get("input_name")
    where = f"node {node_id} ({class_type})"
    if input_name is not None:
        where += f" input '{input_name}'"
    details = _without_input_prefix(str(error.get("details", "")), input_name)
    return f"{where}: {error['message']}" + (f" [{details}]" if details else "")


def _without_input_prefix(details: str, input_name: str | None) -> str:
    if input_name is None:
        return details
    if details == input_name:
        return ""
    for separator in (": ", ", "):
        if details.startswith(input_name + separator):
            return details[len(input_name) + len(separator):]
    return details


__all__ = (
    "ClassSpec", "CompiledCatalog", "InputSpec", "PromptValidationError", "compile_catalog",
    "validate_prompt")
