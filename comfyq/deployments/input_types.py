"""What a deployed graph lets a run set: its ComfyDeploy external input nodes, described as
ComfyDeploy's deployments list describes them (``input_types``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfyq.deployments.shapes import InputModel
from comfyq.inputs import enum_choices

#: Prefix of the class of every ComfyDeploy external input node.
EXTERNAL_INPUT_PREFIX = "ComfyUIDeployExternal"
#: The value type of the external input classes that do not take text.
VALUE_TYPES = {
    "ComfyUIDeployExternalNumber": "float",
    "ComfyUIDeployExternalNumberSlider": "float",
    "ComfyUIDeployExternalNumberInt": "integer",
    "ComfyUIDeployExternalNumberSliderInt": "integer",
    "ComfyUIDeployExternalSeed": "integer",
    "ComfyUIDeployExternalBoolean": "boolean",
}


def input_types(graph: Mapping[str, Any]) -> list[InputModel]:
    """The external inputs of ``graph``, in node order; linked settings read as unset."""
    described = []
    for node in graph.values():
        class_type = node.get("class_type", "")
        node_inputs = node.get("inputs") or {}
        input_id = node_inputs.get("input_id")
        if not class_type.startswith(EXTERNAL_INPUT_PREFIX) or not isinstance(input_id, str):
            continue
        described.append(InputModel(
            type=VALUE_TYPES.get(class_type, "string"), class_type=class_type, input_id=input_id,
            default_value=_literal(node_inputs.get("default_value")),
            min_value=_number(node_inputs.get("min_value")),
            max_value=_number(node_inputs.get("max_value")),
            step=_number(node_inputs.get("step")),
            display_name=_text(node_inputs.get("display_name")),
            description=_text(node_inputs.get("description")),
            enum_options=_options(node_inputs.get("options"))))
    return described


def _literal(value: Any) -> Any:
    # In an API graph a list is a link to another node's output, not a value.
    return None if isinstance(value, list) else value


def _number(value: Any) -> float | None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return value if is_number else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _options(value: Any) -> list[str] | None:
    choices = enum_choices(_literal(value))
    return [str(choice) for choice in choices] if choices is not None else None
