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
    """The first URL among the node's URL fields is fetched; else ``default_value`` is used."""

    KIND = "file"
    URL_FIELDS: tuple[str, ...] = ()
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

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
    URL_FIELDS = ("file_url",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input_id": _string("input_file")},
                "optional": {"file_url": _string(), "default_value": _string(),
                             "display_name": _string(), "description": _string()}}


class ComfyUIDeployExternalLora(_ExternalFileInput):
    KIND = "lora"
    URL_FIELDS = ("lora_url",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input_id": _string("input_lora")},
                "optional": {"lora_url": _string(), "default_value": _string(),
                             "display_name": _string(), "description": _string()}}


class ComfyUIDeployExternalCheckpoint(_ExternalFileInput):
    KIND = "checkpoint"
    URL_FIELDS = ("default_value",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input_id": _string("input_checkpoint")},
                "optional": {"default_value": _string(), "display_name": _string(),
                             "description": _string()}}


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
