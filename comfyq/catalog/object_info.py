"""Node catalogs in ComfyUI's ``GET /object_info`` format: build, load and combine them.

A catalog maps node class name -> entry, each entry shaped as ComfyUI 0.3.64 serves it::

    {"input": {"required": {...}, "optional": {...}, "hidden": {...}},
     "input_order": {"required": [...], ...}, "output": [...], "output_is_list": [...],
     "output_name": [...], "name": ..., "display_name": ..., "description": ...,
     "python_module": ..., "category": ..., "output_node": bool, ...}

Entries are plain JSON data (lists, never tuples; plain ``str``, never a ``str`` subclass such as
the ``"*"`` wildcard type), so a catalog built in a worker and one read back from Redis or a file
compare equal and validate alike. Checking a graph against a catalog lives in
:mod:`comfyq.catalog.validation`.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

logger = logging.getLogger(__name__)

#: The input categories of an entry, in the order ComfyUI lists them.
INPUT_CATEGORIES = ("required", "optional", "hidden")

#: The wildcard socket type: accepts, and is accepted by, every type.
WILDCARD_TYPE = "*"


# --- one entry ---------------------------------------------------------------------------------

def _as_json_data(value: Any) -> Any:
    """``value`` with tuples turned into lists and ``str`` subclasses into plain strings."""
    if isinstance(value, str):
        return str(value) if type(value) is not str else value
    if isinstance(value, (list, tuple)):
        return [_as_json_data(item) for item in value]
    if isinstance(value, Mapping):
        return {_as_json_data(key): _as_json_data(item) for key, item in value.items()}
    return value


def node_info(class_name: str, node_class: type, display_name: str | None = None) -> dict:
    """The ``/object_info`` entry of ``node_class`` registered as ``class_name``.

    Mirrors ComfyUI 0.3.64's server: inputs from ``INPUT_TYPES()``, outputs from
    ``RETURN_TYPES`` (``RETURN_NAMES``, ``OUTPUT_IS_LIST`` and ``OUTPUT_TOOLTIPS`` when given),
    ``category`` defaulting to ``"sd"``, ``python_module`` to ``"nodes"``, ``output_node`` true
    when ``OUTPUT_NODE == True``, and ``deprecated``/``experimental``/``api_node`` only when
    the class sets them. ``display_name`` defaults to the class name. A class that describes
    itself (``GET_NODE_INFO_V1``, as ComfyUI's newer node API does) is asked directly.
    """
    describe_itself = getattr(node_class, "GET_NODE_INFO_V1", None)
    if callable(describe_itself):
        return _as_json_data(describe_itself())

    input_types = _as_json_data(node_class.INPUT_TYPES())
    outputs = _as_json_data(list(node_class.RETURN_TYPES))
    info: dict[str, Any] = {
        "input": input_types,
        "input_order": {category: list(inputs) for category, inputs in input_types.items()},
        "output": outputs,
        "output_is_list": _as_json_data(
            getattr(node_class, "OUTPUT_IS_LIST", [False] * len(outputs))),
        "output_name": _as_json_data(getattr(node_class, "RETURN_NAMES", outputs)),
        "name": class_name,
        "display_name": display_name if display_name is not None else class_name,
        "description": getattr(node_class, "DESCRIPTION", ""),
        "python_module": getattr(node_class, "RELATIVE_PYTHON_MODULE", "nodes"),
        "category": getattr(node_class, "CATEGORY", "sd"),
        # ComfyUI's server tests ``== True``: a class saying OUTPUT_NODE = 1 is an output too.
        "output_node": bool(getattr(node_class, "OUTPUT_NODE", False) == True),
    }
    if hasattr(node_class, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = _as_json_data(node_class.OUTPUT_TOOLTIPS)
    if getattr(node_class, "DEPRECATED", False):
        info["deprecated"] = True
    if getattr(node_class, "EXPERIMENTAL", False):
        info["experimental"] = True
    if hasattr(node_class, "API_NODE"):
        info["api_node"] = node_class.API_NODE
    validates = self_validation(node_class)
    if validates is not None:
        info[SELF_VALIDATION_KEY] = validates
    return info


#: comfyq's addition to a class's entry: what its own ``VALIDATE_INPUTS`` checks, so a catalog
#: alone (submit time, no classes) skips the built-in checks ComfyUI skips for such a class.
SELF_VALIDATION_KEY = "comfyq_validate_inputs"


def self_validation(node_class: type) -> dict[str, Any] | None:
    """What ``VALIDATE_INPUTS`` takes, as ComfyUI reads its signature: the inputs it names
    (their min/max/choices are not checked), whether it takes ``**kwargs`` (all inputs) and
    whether it asks for ``input_types`` (links' types are not checked). None without one."""
    validate = getattr(node_class, "VALIDATE_INPUTS", None)
    if validate is None:
        return None
    try:
        spec = inspect.getfullargspec(validate)
    except TypeError:
        return None
    return {"inputs": [name for name in spec.args if name not in ("cls", "self")],
            "all_inputs": spec.varkw is not None, "input_types": "input_types" in spec.args}


def build_catalog(node_classes: Mapping[str, type],
                  display_names: Mapping[str, str] | None = None) -> dict:
    """The ``/object_info`` catalog of a whole registry (class name -> class).

    Like ComfyUI, a class whose description fails (``INPUT_TYPES()`` raising, say) is logged
    and left out rather than failing the whole catalog.
    """
    display_names = display_names or {}
    catalog: dict[str, dict] = {}
    for class_name, node_class in node_classes.items():
        try:
            catalog[class_name] = node_info(class_name, node_class, display_names.get(class_name))
        except Exception:  # one broken class must not hide every other class
            logger.exception("node class %s could not be described; left out of the catalog",
                             class_name)
    return catalog


def load_catalog(path: str | PathLike[str]) -> dict:
    """A catalog read from a JSON file (such as a saved ``GET /object_info`` answer)."""
    with open(path, encoding="utf-8") as file:
        catalog = json.load(file)
    if not isinstance(catalog, dict) or not all(
            isinstance(entry, dict) for entry in catalog.values()):
        raise ValueError(f"{path}: a node catalog must be a JSON object mapping class names "
                         "to /object_info entries")
    return catalog


# --- combining the catalogs of several workers -------------------------------------------------

class _Incompatible(Exception):
    """Two workers describe the same input in ways no single value or link satisfies."""


def combine_catalogs(catalogs: Sequence[Mapping[str, Any]]) -> dict:
    """The catalog that the workers of ONE GPU type offer together: what EVERY worker can run.

    Runs are validated at submit time against this catalog and then taken by whichever worker
    is free, so the combined catalog must accept a graph only when each worker would; and it
    must not depend on which worker published last, or validation would flap. The rule:

    * a class is offered only when every catalog has it;
    * an input required by any worker is required; other inputs stay optional (a worker that
      lacks an optional input ignores it); hidden inputs are merged;
    * socket types are intersected: equal types stay, ``"*"`` yields to the other side,
      comma-separated unions keep their common members; combo choices (old-style lists and
      ``["COMBO", {"options": [...]}]``) keep only the choices every worker lists, in the first
      catalog's order;
    * numeric limits take the tighter bound: the largest ``min`` and the smallest ``max``;
    * outputs keep the leading outputs whose types all workers agree on, so no link can name
      an output some worker lacks; ``output_node`` holds only when it holds for every worker;
    * a class whose workers disagree beyond repair (an input typed IMAGE on one worker and MASK
      on another) is left out;
    * names, descriptions and other metadata come from the first catalog.

    The result does not depend on the order of the catalogs except for that metadata and the
    order of keys and choices. No catalog is modified; an empty sequence combines to ``{}``.
    """
    if not catalogs:
        return {}
    first, others = catalogs[0], catalogs[1:]
    combined: dict[str, dict] = {}
    for class_name, entry in first.items():
        entries = [entry] + [catalog.get(class_name) for catalog in others]
        if any(not isinstance(candidate, Mapping) for candidate in entries):
            continue
        try:
            combined[class_name] = _combine_entries(entries)
        except _Incompatible as reason:
            logger.warning("node class %s is left out of the combined catalog: %s",
                           class_name, reason)
    return combined


def _combine_entries(entries: list[Mapping[str, Any]]) -> dict:
    result = copy.deepcopy(dict(entries[0]))
    inputs = _combine_inputs([entry.get("input") or {} for entry in entries])
    result["input"] = inputs
    result["input_order"] = {category: list(specs) for category, specs in inputs.items()}
    kept = _common_output_count(entries)
    if kept < len(result.get("output") or []):
        for key in ("output", "output_is_list", "output_name", "output_tooltips"):
            if isinstance(result.get(key), list):
                result[key] = result[key][:kept]
    result["output_node"] = all(entry.get("output_node") is True for entry in entries)
    return result


def _combine_inputs(input_sets: list[Mapping[str, Any]]) -> dict:
    required_anywhere = {name for inputs in input_sets for name in inputs.get("required") or {}}
    sockets: dict[str, list] = {}
    for category in ("required", "optional"):
        for inputs in input_sets:
            for name, spec in (inputs.get(category) or {}).items():
                sockets[name] = (copy.deepcopy(list(spec)) if name not in sockets
                                 else _combine_input_specs(name, sockets[name], spec))
    hidden: dict[str, Any] = {}
    for inputs in input_sets:
        for name, spec in (inputs.get("hidden") or {}).items():
            hidden.setdefault(name, copy.deepcopy(spec))
    buckets = {
        "required": {name: spec for name, spec in sockets.items() if name in required_anywhere},
        "optional": {name: spec for name, spec in sockets.items()
                     if name not in required_anywhere},
        "hidden": hidden,
    }
    return {category: bucket for category, bucket in buckets.items()
            if bucket or category in input_sets[0]}


def _combine_input_specs(name: str, kept: list, other: Sequence) -> list:
    kept_type, kept_config = kept[0], (kept[1] if len(kept) > 1 else {})
    other_type, other_config = other[0], (other[1] if len(other) > 1 else {})
    kept_choices, other_choices = _choices(kept_type, kept_config), _choices(other_type,
                                                                             other_config)
    config = dict(kept_config)
    if kept_choices is not None or other_choices is not None:
        if not (_is_combo_type(kept_type) and _is_combo_type(other_type)):
            raise _Incompatible(f"input {name!r} is a combo on one worker only")
        if kept_choices is None:
            common = list(other_choices)
        elif other_choices is None:
            common = list(kept_choices)
        else:
            common = [choice for choice in kept_choices if choice in other_choices]
        if isinstance(kept_type, list):
            kept_type = common
        else:
            config["options"] = common
    else:
        kept_type = _intersect_socket_types(name, kept_type, other_type)
    if "min" in other_config:
        config["min"] = max(config.get("min", other_config["min"]), other_config["min"])
    if "max" in other_config:
        config["max"] = min(config.get("max", other_config["max"]), other_config["max"])
    return [kept_type, config] if config or len(kept) > 1 else [kept_type]


def _is_combo_type(socket_type: Any) -> bool:
    return isinstance(socket_type, list) or socket_type == "COMBO"


def _choices(socket_type: Any, config: Mapping[str, Any]) -> list | None:
    """The choices of a combo input, or None when it has no list to check against."""
    if isinstance(socket_type, list):
        return socket_type
    if socket_type == "COMBO" and isinstance(config.get("options"), list):
        return config["options"]
    return None


def _intersect_socket_types(name: str, first: Any, second: Any) -> Any:
    if first == second:
        return first
    if not isinstance(first, str) or not isinstance(second, str):
        raise _Incompatible(f"input {name!r} has types {first!r} and {second!r}")
    if first == WILDCARD_TYPE:
        return second
    if second == WILDCARD_TYPE:
        return first
    second_members = {member.strip() for member in second.split(",")}
    common = [member.strip() for member in first.split(",") if member.strip() in second_members]
    if not common:
        raise _Incompatible(f"input {name!r} has types {first!r} and {second!r}")
    return ",".join(common)


def _common_output_count(entries: list[Mapping[str, Any]]) -> int:
    output_lists = [entry.get("output") or [] for entry in entries]
    count = 0
    for types in zip(*output_lists):
        if any(socket_type != types[0] for socket_type in types):
            break
        count += 1
    return count
