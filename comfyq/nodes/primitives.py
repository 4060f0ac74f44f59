"""ComfyUI's primitive nodes: a literal INT, FLOAT, STRING or BOOLEAN as a node output."""

from __future__ import annotations

import sys

from comfyq.values import as_bool, as_float, as_int

CATEGORY = "utils/primitive"


class PrimitiveInt:
    """An integer literal."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {"min": -sys.maxsize, "max": sys.maxsize,
                                               "control_after_generate": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, value: int) -> tuple[int]:
        return (as_int(value, "value"),)


class PrimitiveFloat:
    """A float literal."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("FLOAT", {"min": -sys.maxsize, "max": sys.maxsize})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, value: float) -> tuple[float]:
        return (as_float(value, "value"),)


class PrimitiveString:
    """A one-line string literal."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("STRING", {"multiline": False})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, value: str) -> tuple[str]:
        return (str(value),)


class PrimitiveBoolean:
    """A boolean literal."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("BOOLEAN", {})}}

    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, value: bool) -> tuple[bool]:
        return (as_bool(value, "value"),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "PrimitiveInt": PrimitiveInt,
    "PrimitiveFloat": PrimitiveFloat,
    "PrimitiveString": PrimitiveString,
    "PrimitiveBoolean": PrimitiveBoolean,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "PrimitiveInt": "Int",
    "PrimitiveFloat": "Float",
    "PrimitiveString": "String",
    "PrimitiveBoolean": "Boolean",
}
