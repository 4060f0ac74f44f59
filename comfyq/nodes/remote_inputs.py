"""ComfyDeploy's external inputs that take a file by URL: a file, a LoRA, a checkpoint.

Each fetches its URL on the worker through :func:`comfyq.remote_files.fetch_input` (the SSRF
guard, a size limit, a content check and this host's cache) and returns the local path, which
loader nodes take. Without a URL the node returns its ``default_value`` (a name the loader knows).
"""

from __future__ import annotations

from typing import Any

from comfyq.remote_files import fetch_input

CATEGORY = "deploy"


def _string(default: str = "") -> tuple[str, dict]:
    return ("STRING", {"multiline": False, "default": default})


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(
        ("http://", "https://", "file://"))


class _ExternalFileInput:
    """The first URL among the node's URL fields is fetched; else ``default_value`` is used.

    A node is its ``KIND`` of content, its ``input_id``'s default and its URL fields.
    """

    KIND = "file"
    DEFAULT_INPUT_ID = "input_file"
    URL_FIELDS: tuple[str, ...] = ()
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        optional = (*cls.URL_FIELDS, "default_value", "display_name", "description")
        return {"required": {"input_id": _string(cls.DEFAULT_INPUT_ID)},
                "optional": {name: _string() for name in dict.fromkeys(optional)}}

    def run(self, input_id: Any, display_name: str = "", description: str = "",
            **values: Any) -> tuple[str]:
        for name in ("input_id", *self.URL_FIELDS):
            source = input_id if name == "input_id" else values.get(name)
            if _is_url(source):
                return (str(fetch_input(source, self.KIND)),)
        default = values.get("default_value") or ""
        if default:
            return (str(default),)
        fields = " or ".join(("input_id", *self.URL_FIELDS))
        raise ValueError(f"input_id {input_id!r}: no file given; expected a URL in {fields}, "
                         "or a default_value")


class ComfyUIDeployExternalFile(_ExternalFileInput):
    KIND = "file"
    DEFAULT_INPUT_ID = "input_file"
    URL_FIELDS = ("file_url",)


class ComfyUIDeployExternalLora(_ExternalFileInput):
    KIND = "lora"
    DEFAULT_INPUT_ID = "input_lora"
    URL_FIELDS = ("lora_url",)


class ComfyUIDeployExternalCheckpoint(_ExternalFileInput):
    KIND = "checkpoint"
    DEFAULT_INPUT_ID = "input_checkpoint"
    URL_FIELDS = ("default_value",)


NODE_CLASS_MAPPINGS = {
    "ComfyUIDeployExternalFile": ComfyUIDeployExternalFile,
    "ComfyUIDeployExternalLora": ComfyUIDeployExternalLora,
    "ComfyUIDeployExternalCheckpoint": ComfyUIDeployExternalCheckpoint,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ComfyUIDeployExternalFile": "External File (ComfyUI Deploy)",
    "ComfyUIDeployExternalLora": "External Lora (ComfyUI Deploy)",
    "ComfyUIDeployExternalCheckpoint": "External Checkpoint (ComfyUI Deploy)",
}
