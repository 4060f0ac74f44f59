"""ComfyDeploy's external input and output nodes, and how a run's ``inputs`` reach them.

The classes carry the names and ``INPUT_TYPES`` of ComfyDeploy's custom nodes
(``BennyKok/comfyui-deploy``, ``comfy-nodes/``), so a workflow exported from ComfyDeploy runs
unchanged. :func:`apply_inputs` puts a run request's ``inputs`` into such a graph the way
ComfyDeploy's ``apply_inputs_to_workflow`` does, except that a value which cannot fit its node
(text for a number, a URL that is not one) is refused with :class:`ExternalInputError` instead
of being silently replaced by the node's default.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from comfyq.inputs import FLOAT_SLIDER, INT_SLIDER, image_list, is_image_source
from comfyq.nodes.common import ANY, image_batch
from comfyq.nodes.files import next_counter, save_target, write_new_file
from comfyq.nodes.image_sources import (
    ImageSourceError,
    is_zip_url,
    load_archive_images,
    load_image,
)
from comfyq.nodes.resample import common_upscale
from comfyq.nodes.save import save_images
from comfyq.run_context import ProgressBar, current_context
from comfyq.values import as_bool, as_float, as_int

CATEGORY = "🔗ComfyDeploy"
_INT_LIMIT = 2147483647
#: ComfyDeploy's seed limit (15 digits).
SEED_LIMIT = 999_999_999_999_999
_SEED_DESCRIPTION = (
    'For default value:\n"-1" (i.e. not in range): Randomize within the min and max value range. '
    "\nin range: Fixed, always the same value\n"
)
_PREFIX_TOOLTIP = (
    "The prefix for the file to save. This may include formatting information such as "
    "%date:yyyy-MM-dd%{nodes} to include values from nodes."
)


def _input_id(default: str) -> tuple[str, dict]:
    return ("STRING", {"multiline": False, "default": default})


def _text(multiline: bool, default: str = "") -> tuple[str, dict]:
    return ("STRING", {"multiline": multiline, "default": default})


def _labels(description_multiline: bool = True) -> dict[str, tuple[str, dict]]:
    """The optional ``display_name`` and ``description`` every external input node has."""
    return {"display_name": _text(False), "description": _text(description_multiline)}


def _number(kind: str, default: float, step: float | None = None) -> tuple[str, dict]:
    options: dict[str, Any] = {"multiline": True, "display": "number", "min": -_INT_LIMIT,
                               "max": _INT_LIMIT, "default": default}
    if step is not None:
        options["step"] = step
    return (kind, options)


# ----------------------------------------------------------------------------- text and numbers


class ComfyUIDeployExternalText:
    """A text input; the run's value arrives in ``default_value``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input_id": _input_id("input_text")},
                "optional": {"default_value": _text(True), **_labels()}}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, input_id: Any, default_value: Any = "", display_name: str = "",
            description: str = "") -> tuple[str]:
        return ("" if default_value is None else str(default_value),)


class ComfyUIDeployExternalTextAny(ComfyUIDeployExternalText):
    """A text input whose output connects to any socket type; the value passes unchanged."""

    RETURN_TYPES = (ANY,)

    def run(self, input_id: Any, default_value: Any = "", display_name: str = "",
            description: str = "") -> tuple[Any]:
        return (default_value,)


class ComfyUIDeployExternalNumber:
    """A float input; the run's value arrives in ``input_id`` (else ``default_value``)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input_id": _input_id("input_number")},
                "optional": {"default_value": ("FLOAT", {"multiline": True, "display": "number",
                                                         "default": 0, "min": -_INT_LIMIT,
                                                         "max": _INT_LIMIT, "step": 0.01}),
                             **_labels()}}

    RETURN_TYPES = ("FLOAT",)
    RETURN_NAMES = ("value",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, input_id: Any, default_value: Any = 0, display_name: str = "",
            description: str = "") -> tuple[float]:
        return (_parsed_or(as_float, input_id, default_value, "default_value"),)


class ComfyUIDeployExternalNumberInt:
    """An integer input; the run's value arrives in ``input_id`` (else ``default_value``)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input_id": _input_id("input_number")},
                "optional": {"default_value": _number("INT", 0), **_labels()}}

    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("value",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, input_id: Any, default_value: Any = 0, display_name: str = "",
            description: str = "") -> tuple[int]:
        return (_parsed_or(as_int, input_id, default_value, "default_value"),)


def _parsed_or(parse: Callable[[Any, str], Any], value: Any, default: Any,
               default_name: str) -> Any:
    """``value`` parsed, or the node's default when ``value`` is still the input's id text."""
    try:
        return parse(value, "input_id")
    except ValueError:
        return parse(default, default_name)


class ComfyUIDeployExternalNumberSlider:
    """A float within ``min_value``..``max_value``; out of range gives ``default_value``."""

    kind, parse = "FLOAT", staticmethod(FLOAT_SLIDER.parse)
    defaults = FLOAT_SLIDER.defaults
    step: float = 0.01
    input_id_default = "input_number_slider"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        numbers = {name: _number(cls.kind, value, cls.step) for name, value in cls.defaults.items()}
        return {"required": {"input_id": _input_id(cls.input_id_default)},
                "optional": {**numbers, **_labels()}}

    RETURN_TYPES = ("FLOAT",)
    RETURN_NAMES = ("value",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, input_id: Any, default_value: Any = None, min_value: Any = None,
            max_value: Any = None, display_name: str = "", description: str = "") -> tuple[Any]:
        low = self.parse(self.defaults["min_value"] if min_value is None else min_value,
                         "min_value")
        high = self.parse(self.defaults["max_value"] if max_value is None else max_value,
                          "max_value")
        fallback = self.parse(
            self.defaults["default_value"] if default_value is None else default_value,
            "default_value")
        try:
            value = self.parse(input_id, "input_id")
        except ValueError:
            return (fallback,)
        return (value if low <= value <= high else fallback,)


class ComfyUIDeployExternalNumberSliderInt(ComfyUIDeployExternalNumberSlider):
    """An integer within ``min_value``..``max_value``; out of range gives ``default_value``."""

    kind, parse = "INT", staticmethod(INT_SLIDER.parse)
    defaults = INT_SLIDER.defaults
    step = 1
    input_id_default = "input_number_slider_int"
    RETURN_TYPES = ("INT",)


class ComfyUIDeployExternalBoolean:
    """A boolean input; the run's value arrives in ``default_value``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input_id": _input_id("input_bool"),
                             "default_value": ("BOOLEAN", {"default": False})},
                "optional": _labels()}

    RETURN_TYPES = ("BOOLEAN",)
    RETURN_NAMES = ("bool_value",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, input_id: Any, default_value: Any = False, display_name: str = "",
            description: str = "") -> tuple[bool]:
        return (as_bool(default_value, "default_value"),)


def _seed_range(min_value: Any, max_value: Any) -> tuple[int, int]:
    """ComfyDeploy's seed range: clamped to 1..SEED_LIMIT, ends swapped when reversed."""
    low = max(1, as_int(min_value, "min_value"))
    high = min(SEED_LIMIT, as_int(max_value, "max_value"))
    return (low, high) if low <= high else (high, low)


class ComfyUIDeployExternalSeed:
    """A seed: ``default_value`` within min..max is used as is; -1 (or out of range) is random."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "input_id": _input_id("input_seed"),
                "default_value": ("INT", {"default": -1}),
                "min_value": ("INT", {"default": 1, "min": 1, "max": SEED_LIMIT}),
                "max_value": ("INT", {"default": 4294967295, "min": 1, "max": SEED_LIMIT}),
            },
            "optional": {"display_name": _text(False),
                         "description": _text(True, _SEED_DESCRIPTION)},
        }

    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("seed",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    @classmethod
    def IS_CHANGED(cls, input_id: Any = None, default_value: Any = -1, min_value: Any = 1,
                   max_value: Any = 4294967295, **_: Any) -> Any:
        """A fixed seed caches like any input; a random one never does (NaN != NaN)."""
        low, high = _seed_range(min_value, max_value)
        seed = as_int(default_value, "default_value")
        return (input_id, seed) if low <= seed <= high else float("nan")

    def run(self, input_id: Any, default_value: Any = -1, min_value: Any = 1,
            max_value: Any = 4294967295, display_name: str = "",
            description: str = "") -> tuple[int]:
        low, high = _seed_range(min_value, max_value)
        seed = as_int(default_value, "default_value")
        if low <= seed <= high:
            return (seed,)
        return (random.randint(low, high),)


class ComfyUIDeployExternalEnum:
    """One of a list of choices (``options``, a JSON list); the run's value is ``default_value``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input_id": _input_id("input_enum")},
                "optional": {
                    "default_value": ("STRING", {"multiline": False, "default": "",
                                                 "dynamic_enum": True}),
                    "options": _text(True),
                    **_labels(),
                }}

    RETURN_TYPES = (ANY,)
    RETURN_NAMES = ("text",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, input_id: Any, options: Any = "", default_value: Any = "",
            display_name: str = "", description: str = "") -> tuple[Any]:
        return (default_value,)


# ------------------------------------------------------------------------------------ images


class ComfyUIDeployExternalImage:
    """An image from ``input_id`` or ``default_value_url`` (http(s) URL or data URI).

    The first of the two that is a URL is loaded, and a failure to load it is an error; when
    neither is a URL, the connected ``default_value`` image is used.
    """

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input_id": _input_id("input_image")},
                "optional": {
                    "default_value": ("IMAGE",),
                    **_labels(description_multiline=False),
                    "default_value_url": ("STRING", {"image_preview": True, "default": ""}),
                }}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, input_id: Any, default_value: np.ndarray | None = None,
            display_name: str = "", description: str = "",
            default_value_url: str = "") -> tuple[np.ndarray]:
        for name, source in (("input_id", input_id), ("default_value_url", default_value_url)):
            if is_image_source(source):
                try:
                    return (load_image(source),)
                except ImageSourceError as error:
                    raise ImageSourceError(f"{name}: {error}") from None
        if default_value is not None:
            return (image_batch(default_value, "default_value"),)
        raise ValueError(
            f"input_id {input_id!r}: no image given; expected an http(s) URL or a "
            f"data:image/...;base64, URI in input_id or default_value_url, or a connected "
            f"default_value image")


class ComfyUIDeployExternalImageBatch:
    """A batch of images from a list of URLs, data URIs or zip archives of images.

    Images of another size than the first are resized to it (Lanczos, centre crop), as
    ComfyDeploy does. Reports progress per source downloaded.
    """

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"input_id": _input_id("input_images"), "images": _text(False, "[]")},
                "optional": {"default_value": ("IMAGE",), **_labels()}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, input_id: Any, images: Any = "[]", default_value: np.ndarray | None = None,
            display_name: str = "", description: str = "") -> tuple[np.ndarray]:
        sources = image_list(images)
        if not sources:
            if default_value is None:
                raise ValueError("images: the list is empty and no default_value is connected")
            return (image_batch(default_value, "default_value"),)
        loaded: list[np.ndarray] = []
        progress = ProgressBar(len(sources))
        for index, source in enumerate(sources):
            try:
                loaded.extend(load_archive_images(source) if is_zip_url(source)
                              else [load_image(source)])
            except ImageSourceError as error:
                raise ImageSourceError(f"images[{index}]: {error}") from None
            progress.update(1)
        if not loaded:
            raise ValueError("images: the archives held no png, jpg or webp image")
        return (_same_size_batch(loaded),)


def _same_size_batch(images: list[np.ndarray]) -> np.ndarray:
    height, width = images[0].shape[1:3]
    fitted = [image if image.shape[1:3] == (height, width)
              else common_upscale(image, width, height, "lanczos", "center")
              for image in images]
    return np.concatenate(fitted, axis=0)


# ------------------------------------------------------------------------------------ outputs


class ComfyDeployOutputImage:
    """Save images as png, jpg or webp into the run's output folder, tagged with ``output_id``."""

    file_types = ["png", "jpg", "webp"]

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {
                    "default": "ComfyUI",
                    "tooltip": _PREFIX_TOOLTIP.format(nodes=" or %Empty Latent Image.width%")}),
                "file_type": (cls.file_types, {"default": "webp"}),
                "quality": ("INT", {"default": 80, "min": 1, "max": 100, "step": 1}),
            },
            "optional": {"output_id": _input_id("output_images")},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    def run(self, images: np.ndarray, filename_prefix: str = "ComfyUI", file_type: str = "webp",
            quality: Any = 80, output_id: str = "output_images", prompt: Any = None,
            extra_pnginfo: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if file_type not in self.file_types:
            raise ValueError(f"file_type must be one of {self.file_types}, got {file_type!r}")
        quality = as_int(quality, "quality")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be between 1 and 100, got {quality}")
        records = save_images(images, filename_prefix, root=current_context().output_dir,
                              folder_type="output", file_type=file_type, quality=quality,
                              prompt=prompt, extra_pnginfo=extra_pnginfo)
        for record in records:
            record["output_id"] = output_id
        return {"ui": {"images": records}, "result": ()}


class ComfyDeployOutputText:
    """Save text as a txt, json or md file into the run's output folder.

    The ui holds ComfyDeploy's ``text_file`` record and, for readers of the run's outputs, the
    text itself under ``text`` (as ComfyUI's text-showing nodes report it).
    """

    file_types = ["txt", "json", "md"]

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "forceInput": True,
                                    "tooltip": "The text to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI",
                                               "tooltip": _PREFIX_TOOLTIP.format(nodes="")}),
                "file_type": (cls.file_types, {"default": "txt"}),
            },
            "optional": {"output_id": _input_id("output_text")},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "Saves the input text to your ComfyUI output directory."

    def run(self, text: Any, filename_prefix: str = "ComfyUI", file_type: str = "txt",
            output_id: str = "output_text", prompt: Any = None,
            extra_pnginfo: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if file_type not in self.file_types:
            raise ValueError(f"file_type must be one of {self.file_types}, got {file_type!r}")
        context = current_context()
        target = save_target(context.output_dir, context.subfolder, filename_prefix)
        name, _ = write_new_file(target, next_counter(target.folder, target.filename),
                                 file_type, _text_file_content(text, file_type).encode("utf-8"))
        record = {"filename": name, "subfolder": target.subfolder, "type": "output",
                  "output_id": output_id}
        return {"ui": {"text_file": [record], "text": [str(text)]}, "result": ()}


def _text_file_content(text: Any, file_type: str) -> str:
    """json files hold the text re-indented when it is JSON, else the text unchanged."""
    if file_type == "json":
        try:
            return json.dumps(json.loads(text) if isinstance(text, str) else text, indent=2)
        except (json.JSONDecodeError, TypeError):
            pass
    return str(text)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "ComfyUIDeployExternalText": ComfyUIDeployExternalText,
    "ComfyUIDeployExternalTextAny": ComfyUIDeployExternalTextAny,
    "ComfyUIDeployExternalNumber": ComfyUIDeployExternalNumber,
    "ComfyUIDeployExternalNumberInt": ComfyUIDeployExternalNumberInt,
    "ComfyUIDeployExternalNumberSlider": ComfyUIDeployExternalNumberSlider,
    "ComfyUIDeployExternalNumberSliderInt": ComfyUIDeployExternalNumberSliderInt,
    "ComfyUIDeployExternalBoolean": ComfyUIDeployExternalBoolean,
    "ComfyUIDeployExternalSeed": ComfyUIDeployExternalSeed,
    "ComfyUIDeployExternalEnum": ComfyUIDeployExternalEnum,
    "ComfyUIDeployExternalImage": ComfyUIDeployExternalImage,
    "ComfyUIDeployExternalImageBatch": ComfyUIDeployExternalImageBatch,
    "ComfyDeployOutputImage": ComfyDeployOutputImage,
    "ComfyDeployOutputText": ComfyDeployOutputText,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "ComfyUIDeployExternalText": "External Text (ComfyUI Deploy)",
    "ComfyUIDeployExternalTextAny": "External Text Any (ComfyUI Deploy)",
    "ComfyUIDeployExternalNumber": "External Number (ComfyUI Deploy)",
    "ComfyUIDeployExternalNumberInt": "External Number Int (ComfyUI Deploy)",
    "ComfyUIDeployExternalNumberSlider": "External Number Slider (ComfyUI Deploy)",
    "ComfyUIDeployExternalNumberSliderInt": "External Number Slider Int (ComfyUI Deploy)",
    "ComfyUIDeployExternalBoolean": "External Boolean (ComfyUI Deploy)",
    "ComfyUIDeployExternalSeed": "External Seed (ComfyUI Deploy)",
    "ComfyUIDeployExternalEnum": "External Enum",
    "ComfyUIDeployExternalImage": "External Image (ComfyUI Deploy)",
    "ComfyUIDeployExternalImageBatch": "External Image Batch (ComfyUI Deploy)",
    "ComfyDeployOutputImage": "Image Output (ComfyDeploy)",
    "ComfyDeployOutputText": "Text Output (ComfyDeploy)",
}
