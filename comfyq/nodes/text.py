"""ComfyUI's string nodes: concatenate two strings, replace a substring."""

from __future__ import annotations

CATEGORY = "utils/string"


class StringConcatenate:
    """``string_a`` + ``delimiter`` + ``string_b``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "string_a": ("STRING", {"multiline": True}),
            "string_b": ("STRING", {"multiline": True}),
            "delimiter": ("STRING", {"default": "", "multiline": False}),
        }}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, string_a: str, string_b: str, delimiter: str = "") -> tuple[str]:
        return (str(delimiter).join((str(string_a), str(string_b))),)


class StringReplace:
    """Every occurrence of ``find`` in ``string`` replaced by ``replace``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "string": ("STRING", {"multiline": True}),
            "find": ("STRING", {"multiline": True}),
            "replace": ("STRING", {"multiline": True}),
        }}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, string: str, find: str, replace: str) -> tuple[str]:
        return (str(string).replace(str(find), str(replace)),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "StringConcatenate": StringConcatenate,
    "StringReplace": StringReplace,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "StringConcatenate": "Concatenate",
    "StringReplace": "Replace",
}
