"""A run's ``inputs`` put into its graph, by ComfyDeploy's rules for its external input nodes.

Pure data work: the producer applies inputs at submit time to check the graph it will queue,
and workers apply them again before executing, so this imports no node implementation (no
numpy, no Pillow). The node classes in :mod:`comfyq.nodes.comfydeploy` read the same
conventions (slider ranges, enum options, image lists) from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyq.errors import ComfyqError
from comfyq.values import as_bool, as_float, as_int


def is_image_source(value: object) -> bool:
    """Whether ``value`` looks like an http(s) URL or a data URI (and is worth loading)."""
    return isinstance(value, str) and value.strip().lower().startswith(
        ("http://", "https://", "data:"))


def _rounded_int(value: Any, input_name: str) -> int:
    """ComfyDeploy's slider reading: any number, rounded to the nearest integer."""
    return int(round(as_float(value, input_name)))


@dataclass(frozen=True)
class SliderSpec:
    """How a slider node reads numbers, and its defaults (ComfyDeploy's)."""

    parse: Callable[[Any, str], Any]
    defaults: dict[str, Any] = field(default_factory=dict)


FLOAT_SLIDER = SliderSpec(as_float, {"default_value": 0.5, "min_value": 0, "max_value": 1})
INT_SLIDER = SliderSpec(_rounded_int, {"default_value": 1, "min_value": 0, "max_value": 10})


def enum_choices(options: Any) -> list[Any] | None:
    """The choices of an Enum node's ``options`` (a JSON list or a list); None if not a list."""
    if isinstance(options, list):
        return options
    if isinstance(options, str) and options.strip():
        try:
            parsed = json.loads(options)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, list) else None
    return None


def image_list(images: Any) -> list[str]:
    """ImageBatch's ``images``: a JSON list of URLs (or such a list itself)."""
    parsed = images
    if isinstance(images, str):
        try:
            parsed = json.loads(images) if images.strip() else []
        except json.JSONDecodeError as error:
            raise ValueError(f"images: expected a JSON list of image URLs ({error})") from None
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise ValueError(f"images: expected a list of image URLs, got {images!r:.200}")
    return parsed


class ExternalInputError(ComfyqError, ValueError):
    """A run input's value cannot go into the external input node it names."""

    def __init__(self, key: str, node_id: str, class_type: str, problem: str) -> None:
        self.key, self.node_id, self.class_type = key, node_id, class_type
        self.field = f"inputs.{key}"
        self.problem = f"{problem} (node {node_id}, {class_type})"
        super().__init__(f"{self.field}: {self.problem}")


#: Where ComfyDeploy puts a run input besides ``input_id``, per external input class.
VALUE_FIELDS: dict[str, str] = {
    "ComfyUIDeployExternalText": "default_value",
    "ComfyUIDeployExternalTextAny": "default_value",
    "ComfyUIDeployExternalCheckpoint": "default_value",
    "ComfyUIDeployExternalImageBatch": "images",
    "ComfyUIDeployExternalEnum": "default_value",
    "ComfyUIDeployExternalLora": "lora_url",
    "ComfyUIDeployExternalSlider": "default_value",
    "ComfyUIDeployExternalBoolean": "default_value",
    "ComfyUIDeployExternalFaceModel": "face_model_url",
    "ComfyUIDeployExternalAudio": "audio_file",
    "ComfyUIDeployExternalEXR": "exr_file",
    "ComfyUIDeployExternalFile": "file_url",
    "ComfyUIDeployExternalSeed": "default_value",
}


def apply_inputs(graph: Mapping[str, Any], inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``graph`` with each run input put into the nodes whose ``input_id`` names it.

    ``input_id`` takes the value (ComfyDeploy's convention) and, for the classes in
    :data:`VALUE_FIELDS`, that field does too. Keys no node names are ignored. ``graph`` is not
    modified: the nodes that change are copied, the others are shared with it (submit applies
    inputs to every graph, so a deep copy would be paid on every submit).

    :raises ExternalInputError: a value does not fit its node (e.g. text for a number input, a
        number outside a slider's range, an image that is not a URL).
    """
    inputs = inputs or {}
    prepared = dict(graph)
    for node_id, node in graph.items():
        node_inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(node_inputs, Mapping):
            continue
        key = node_inputs.get("input_id")
        if not isinstance(key, str) or key not in inputs:
            continue
        node_inputs = dict(node_inputs)
        prepared[node_id] = {**node, "inputs": node_inputs}
        class_type = node.get("class_type", "")
        try:
            value = _checked_value(class_type, inputs[key], node_inputs)
        except ValueError as error:
            raise ExternalInputError(key, node_id, class_type, str(error)) from None
        node_inputs["input_id"] = _as_literal(inputs[key])
        field = VALUE_FIELDS.get(class_type)
        if field is not None:
            node_inputs[field] = _as_literal(value)
    return prepared


def _as_literal(value: Any) -> Any:
    """A run input as a graph literal: lists become JSON text, since in an API graph a list
    ``[node_id, index]`` is a link (ComfyDeploy's list inputs are JSON text fields anyway)."""
    return json.dumps(value) if isinstance(value, list) else value


def _literal(node_inputs: Mapping[str, Any], name: str, default: Any) -> Any:
    """An input's literal value, or ``default`` when absent or linked from another node."""
    value = node_inputs.get(name, default)
    return default if isinstance(value, list) else value


def _check_number(value: Any, node_inputs: Mapping[str, Any]) -> Any:
    as_float(value, "value")
    return value


def _check_integer(value: Any, node_inputs: Mapping[str, Any]) -> Any:
    as_int(value, "value")
    return value


def _check_slider(slider: SliderSpec) -> Callable[[Any, Mapping[str, Any]], Any]:
    def check(value: Any, node_inputs: Mapping[str, Any]) -> Any:
        number = slider.parse(value, "value")
        low = slider.parse(_literal(node_inputs, "min_value", slider.defaults["min_value"]),
                           "min_value")
        high = slider.parse(_literal(node_inputs, "max_value", slider.defaults["max_value"]),
                            "max_value")
        if not low <= number <= high:
            raise ValueError(f"{value!r} is outside the slider's range {low}..{high}")
        return value
    return check


def _check_boolean(value: Any, node_inputs: Mapping[str, Any]) -> bool:
    return as_bool(value, "value")


def _check_seed(value: Any, node_inputs: Mapping[str, Any]) -> int:
    return as_int(value, "value")


def _check_enum(value: Any, node_inputs: Mapping[str, Any]) -> Any:
    choices = enum_choices(_literal(node_inputs, "options", ""))
    if choices is not None and value not in choices:
        raise ValueError(f"{value!r} is not one of the options {choices}")
    return value


def _check_image(value: Any, node_inputs: Mapping[str, Any]) -> Any:
    if value == "" or is_image_source(value):
        return value
    raise ValueError(
        f"expected an http(s) URL or a data:image/...;base64, URI, got {value!r:.120}")


def _check_image_batch(value: Any, node_inputs: Mapping[str, Any]) -> str:
    sources = image_list(value)
    for index, source in enumerate(sources):
        if not is_image_source(source):
            raise ValueError(f"item {index}: expected an http(s) URL or data URI, got "
                             f"{source!r:.120}")
    return json.dumps(sources)


def _check_text(value: Any, node_inputs: Mapping[str, Any]) -> Any:
    if isinstance(value, (dict, list)) or value is None:
        raise ValueError(f"expected text, got {type(value).__name__}")
    return value


_CHECKS: dict[str, Callable[[Any, Mapping[str, Any]], Any]] = {
    "ComfyUIDeployExternalText": _check_text,
    "ComfyUIDeployExternalNumber": _check_number,
    "ComfyUIDeployExternalNumberInt": _check_integer,
    "ComfyUIDeployExternalNumberSlider": _check_slider(FLOAT_SLIDER),
    "ComfyUIDeployExternalNumberSliderInt": _check_slider(INT_SLIDER),
    "ComfyUIDeployExternalBoolean": _check_boolean,
    "ComfyUIDeployExternalSeed": _check_seed,
    "ComfyUIDeployExternalEnum": _check_enum,
    "ComfyUIDeployExternalImage": _check_image,
    "ComfyUIDeployExternalImageBatch": _check_image_batch,
}


def _checked_value(class_type: str, value: Any, node_inputs: Mapping[str, Any]) -> Any:
    """The value to store for ``class_type``; raises ValueError when it cannot fit."""
    check = _CHECKS.get(class_type)
    return value if check is None else check(value, node_inputs)
