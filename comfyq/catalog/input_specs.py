"""A node catalog compiled for validation: per class, its inputs prepared for fast checking.

:func:`compile_catalog` turns an ``/object_info`` catalog into a :class:`CompiledCatalog` once
(cached by the catalog's identity), so treat a catalog as immutable once it has been validated
against. What is checked with these specs lives in :mod:`comfyq.catalog.input_checks`; the walk
over a whole prompt in :mod:`comfyq.catalog.validation`.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyq.catalog.object_info import SELF_VALIDATION_KEY, WILDCARD_TYPE

_CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    "INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}

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
    #: The class's ``VALIDATE_INPUTS`` checks this input: no min/max/choices checks here.
    self_validated: bool = False

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
    #: False when the class's ``VALIDATE_INPUTS`` checks the types of its links itself.
    checks_link_types: bool = True


class CompiledCatalog:
    """A catalog prepared for validation; build one with :func:`compile_catalog` and keep it."""

    __slots__ = ("catalog", "classes")

    def __init__(self, catalog: Mapping[str, Any]) -> None:
        self.catalog = catalog
        self.classes: dict[str, ClassSpec] = {
            name: _compile_class(name, entry) for name, entry in catalog.items()
            if isinstance(entry, Mapping)}


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
    validates = entry.get(SELF_VALIDATION_KEY)
    validates = validates if isinstance(validates, Mapping) else {}
    named = set(validates.get("inputs") or ())
    inputs = []
    for category in ("required", "optional"):
        specs = input_types.get(category)
        if isinstance(specs, Mapping):
            for input_name, spec in specs.items():
                compiled = _compile_input(input_name, spec, category == "required")
                compiled.self_validated = bool(validates.get("all_inputs")) or input_name in named
                inputs.append(compiled)
    outputs = entry.get("output")
    return ClassSpec(name=name, inputs=tuple(inputs),
                     outputs=tuple(outputs) if isinstance(outputs, list) else (),
                     output_node=entry.get("output_node") is True,
                     checks_link_types=not validates.get("input_types"))


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
