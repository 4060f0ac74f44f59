"""SaveImage and PreviewImage: PNG files in the run's output (or temp) folder, ComfyUI records.

Each record is ``{"filename", "subfolder", "type"}`` where ``subfolder`` starts with the run's
own sub-folder (:attr:`RunContext.subfolder`), so files of two runs are never shared.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from comfyq.nodes.common import image_batch
from comfyq.nodes.files import (
    encode_image,
    image_to_pil,
    next_counter,
    png_metadata,
    save_target,
    write_new_file,
)
from comfyq.run_context import current_context

_SAVE_PREFIX_TOOLTIP = (
    "The prefix for the file to save. This may include formatting information such as "
    "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."
)


def save_images(images: Any, filename_prefix: str, *, root: Path, folder_type: str,
                file_type: str = "png", quality: int = 80, compress_level: int = 4,
                prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None
                ) -> list[dict[str, str]]:
    """Write each image of the batch as a new file; return ComfyUI's file records.

    :param root: the run's output or temp folder.
    :param folder_type: ``"output"`` or ``"temp"``, the records' ``type``.
    """
    batch = image_batch(images, "images")
    target = save_target(root, current_context().subfolder, filename_prefix,
                         width=batch.shape[2], height=batch.shape[1])
    metadata = png_metadata(prompt, extra_pnginfo) if file_type == "png" else None
    counter = next_counter(target.folder, target.filename)
    records = []
    for batch_number, image in enumerate(batch):
        data = encode_image(image_to_pil(image), file_type, quality=quality,
                            compress_level=compress_level, metadata=metadata)
        name, counter = write_new_file(target, counter, file_type, data, batch_number)
        records.append({"filename": name, "subfolder": target.subfolder, "type": folder_type})
        counter += 1
    return records


class SaveImage:
    """Save images as PNG into the run's output folder."""

    folder_type = "output"
    compress_level = 4

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI",
                                               "tooltip": _SAVE_PREFIX_TOOLTIP}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    def save_images(self, images: np.ndarray, filename_prefix: str = "ComfyUI",
                    prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
        records = save_images(images, filename_prefix + self.prefix_append(), root=self.root(),
                              folder_type=self.folder_type, compress_level=self.compress_level,
                              prompt=prompt, extra_pnginfo=extra_pnginfo)
        return {"ui": {"images": records}, "result": ()}

    def prefix_append(self) -> str:
        return ""

    def root(self) -> Path:
        return current_context().output_dir


class PreviewImage(SaveImage):
    """Save images as PNG into the run's temp folder, named ``ComfyUI_temp_<random>_...``
    (ComfyUI's PreviewImage is a SaveImage into its temp folder, too)."""

    folder_type = "temp"
    compress_level = 1

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {"images": ("IMAGE",)},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def prefix_append(self) -> str:
        return "_temp_" + "".join(random.choices(string.ascii_lowercase, k=5))

    def root(self) -> Path:
        return current_context().temp_dir


NODE_CLASS_MAPPINGS: dict[str, type] = {"SaveImage": SaveImage, "PreviewImage": PreviewImage}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
}
