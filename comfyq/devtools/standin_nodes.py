"""Node classes only the stand-in ComfyUI offers: ComfyUI's LoadImage, and fault injectors.

The fault nodes pass their ``images`` through, so they slot into any image chain:

* ``StandinSleep`` waits ``seconds``; with ``progress_steps`` > 0 it reports progress (and can be
  interrupted) at each step, with 0 it never yields, like a long node without progress callbacks;
* ``StandinFail`` raises ``RuntimeError(message)``;
* ``StandinExit`` ends the whole server process at once, as a crash would;
* ``StandinDropWebsockets`` closes every websocket and refuses new ones for ``refuse_seconds``.

They are built per server (:func:`standin_node_classes`), bound to that server's folders and
controls, so two stand-ins in one process do not share state.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from comfyq.run_context import ProgressBar

CATEGORY = "comfyq/standin"


@dataclass
class StandinServices:
    """What the stand-in's own nodes may touch of their server.

    :param input_dir: where ``/upload/image`` puts files and LoadImage reads them.
    :param shutdown: set when the server stops, so a node that never yields still ends.
    :param drop_websockets: closes every websocket and refuses new ones for the given seconds.
    """

    input_dir: Path
    shutdown: threading.Event
    drop_websockets: Callable[[float], None]


def _passthrough(extra: dict[str, Any]) -> dict:
    return {"required": {"images": ("IMAGE",), **extra}}


def _annotated_path(input_dir: Path, name: str) -> Path:
    """ComfyUI's ``name [input]`` annotation names the input folder explicitly."""
    plain = name.removesuffix(" [input]")
    path = (input_dir / plain).resolve()
    if not path.is_relative_to(input_dir.resolve()):
        raise ValueError(f"image {name!r} is outside the input folder")
    return path


def _open_leniently(path: Path) -> Image.Image:
    """Open an image as ComfyUI's LoadImage does: on failure, again accepting truncated files.

    So a file cut short in its pixel data loads (partly grey), and one that is no image at all
    fails with ``OSError`` as on ComfyUI.
    """
    try:
        picture = Image.open(path)
        picture.load()
        return picture
    except (OSError, ValueError):
        previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, True
        try:
            picture = Image.open(path)
            picture.load()
            return picture
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _load_image_class(services: StandinServices) -> type:
    class LoadImage:
        """ComfyUI's LoadImage: an uploaded file as an IMAGE and its alpha as a MASK."""

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            files = sorted(path.name for path in services.input_dir.iterdir() if path.is_file())
            return {"required": {"image": (files, {"image_upload": True})}}

        RETURN_TYPES = ("IMAGE", "MASK")
        FUNCTION = "load_image"
        CATEGORY = "image"

        @classmethod
        def VALIDATE_INPUTS(cls, image: str) -> bool | str:
            try:
                exists = _annotated_path(services.input_dir, image).is_file()
            except ValueError:
                exists = False
            return True if exists else f"Invalid image file: {image}"

        def load_image(self, image: str) -> tuple[np.ndarray, np.ndarray]:
            with _open_leniently(_annotated_path(services.input_dir, image)) as picture:
                upright = ImageOps.exif_transpose(picture)
                rgb = np.asarray(upright.convert("RGB"), dtype=np.float32) / np.float32(255)
                if "A" in upright.getbands():
                    alpha = np.asarray(upright.getchannel("A"), dtype=np.float32) / 255
                    mask = 1.0 - alpha
                else:
                    mask = np.zeros(rgb.shape[:2], dtype=np.float32)
            return rgb[None], mask[None]

    return LoadImage


def _sleep_class(services: StandinServices) -> type:
    class StandinSleep:
        """Wait ``seconds``; in ``progress_steps`` reported steps, or without ever yielding."""

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return _passthrough({
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0}),
                "progress_steps": ("INT", {"default": 10, "min": 0, "max": 10000}),
            })

        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "sleep"
        CATEGORY = CATEGORY

        def sleep(self, images: np.ndarray, seconds: float, progress_steps: int
                  ) -> tuple[np.ndarray]:
            if progress_steps <= 0:
                services.shutdown.wait(seconds)
                return (images,)
            bar = ProgressBar(progress_steps)
            for _ in range(progress_steps):
                if services.shutdown.wait(seconds / progress_steps):
                    break
                bar.update(1)
            return (images,)

    return StandinSleep


class StandinFail:
    """Raise ``RuntimeError(message)``: an ``execution_error`` on demand."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return _passthrough({"message": ("STRING", {"default": "stand-in failure"})})

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "fail"
    CATEGORY = CATEGORY

    def fail(self, images: np.ndarray, message: str) -> tuple[np.ndarray]:
        raise RuntimeError(message)


class StandinExit:
    """End the server process at once (no answer, no cleanup), as a crash would."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return _passthrough({"exit_code": ("INT", {"default": 17, "min": 1, "max": 255})})

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "exit"
    CATEGORY = CATEGORY

    def exit(self, images: np.ndarray, exit_code: int) -> tuple[np.ndarray]:
        os._exit(exit_code)


def _drop_class(services: StandinServices) -> type:
    class StandinDropWebsockets:
        """Close every websocket, refuse new ones for ``refuse_seconds``, pass images on."""

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return _passthrough(
                {"refuse_seconds": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 600.0})})

        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "drop"
        CATEGORY = CATEGORY

        def drop(self, images: np.ndarray, refuse_seconds: float) -> tuple[np.ndarray]:
            services.drop_websockets(refuse_seconds)
            return (images,)

    return StandinDropWebsockets


def standin_node_classes(services: StandinServices) -> dict[str, type]:
    """The stand-in's own classes, bound to ``services``."""
    return {
        "LoadImage": _load_image_class(services),
        "StandinSleep": _sleep_class(services),
        "StandinFail": StandinFail,
        "StandinExit": StandinExit,
        "StandinDropWebsockets": _drop_class(services),
    }
