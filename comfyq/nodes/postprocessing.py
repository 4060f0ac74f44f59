"""ComfyUI's ``image/postprocessing`` nodes that need no model: Gaussian blur and blend modes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from comfyq.nodes.common import image_batch
from comfyq.nodes.resample import common_upscale
from comfyq.run_context import ProgressBar

BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")


def gaussian_kernel_1d(kernel_size: int, sigma: float) -> np.ndarray:
    """One axis of ImageBlur's kernel, normalised to sum 1.

    ComfyUI samples ``exp(-d^2 / 2 sigma^2)`` on a grid spanning -1..1 (not pixels!), so sigma
    is relative to the blur radius. That 2-D kernel is the outer product of this 1-D one.
    """
    positions = np.linspace(-1, 1, kernel_size, dtype=np.float32)
    weights = np.exp(-(positions * positions) / np.float32(2.0 * sigma * sigma))
    return (weights / weights.sum()).astype(np.float32)


def gaussian_blur(image: np.ndarray, radius: int, sigma: float) -> np.ndarray:
    """Blur one ``[H, W, C]`` image, mirroring the edges (reflect padding, edge not repeated)."""
    kernel = gaussian_kernel_1d(2 * radius + 1, sigma)
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    height, width = image.shape[:2]
    across = np.zeros((padded.shape[0], width, image.shape[2]), dtype=np.float32)
    for offset, weight in enumerate(kernel):
        across += weight * padded[:, offset:offset + width, :]
    blurred = np.zeros(image.shape, dtype=np.float32)
    for offset, weight in enumerate(kernel):
        blurred += weight * across[offset:offset + height, :, :]
    return blurred


class ImageBlur:
    """Gaussian blur of radius ``blur_radius``; reports progress per image of the batch."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "image": ("IMAGE", {}),
            "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
            "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blur"
    CATEGORY = "image/postprocessing"

    def blur(self, image: np.ndarray, blur_radius: int, sigma: float) -> tuple[np.ndarray]:
        image = image_batch(image)
        if blur_radius == 0:
            return (image,)
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        progress = ProgressBar(image.shape[0])
        result = np.empty_like(image)
        for index in range(image.shape[0]):
            result[index] = gaussian_blur(image[index], blur_radius, sigma)
            progress.update(1)
        return (result,)


def _soft_light_curve(x: np.ndarray) -> np.ndarray:
    """The W3C soft-light D(x) curve (the square root branch never sees negatives)."""
    return np.where(x <= 0.25, ((16 * x - 12) * x + 4) * x, np.sqrt(np.maximum(x, 0)))


_BLENDS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "normal": lambda base, top: top,
    "multiply": lambda base, top: base * top,
    "screen": lambda base, top: 1 - (1 - base) * (1 - top),
    "overlay": lambda base, top: np.where(
        base <= 0.5, 2 * base * top, 1 - 2 * (1 - base) * (1 - top)),
    "soft_light": lambda base, top: np.where(
        top <= 0.5,
        base - (1 - 2 * top) * base * (1 - base),
        base + (2 * top - 1) * (_soft_light_curve(base) - base),
    ),
    # Signed, then clamped with the rest: ComfyUI's "difference" is not |a - b|.
    "difference": lambda base, top: base - top,
}


def match_channels(base: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give ``top`` the channel count of ``base``: drop its extra channels, or add opaque alpha.

    (ComfyUI pads ``base`` instead when ``top`` has fewer channels, which then fails to
    broadcast; padding ``top`` with alpha 1 is what that code means to do.)
    """
    if top.shape[-1] > base.shape[-1]:
        return base, top[..., :base.shape[-1]]
    if top.shape[-1] < base.shape[-1]:
        missing = base.shape[-1] - top.shape[-1]
        alpha = np.ones(top.shape[:-1] + (missing,), dtype=np.float32)
        return base, np.concatenate([top, alpha], axis=-1)
    return base, top


class ImageBlend:
    """Blend ``image2`` over ``image1``; ``image2`` is resized (bicubic, centre crop) to fit."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "image1": ("IMAGE", {}),
            "image2": ("IMAGE", {}),
            "blend_factor": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            "blend_mode": ("COMBO", {"multiselect": False, "options": list(BLEND_MODES)}),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blend"
    CATEGORY = "image/postprocessing"

    def blend(self, image1: np.ndarray, image2: np.ndarray, blend_factor: float,
              blend_mode: str) -> tuple[np.ndarray]:
        if blend_mode not in _BLENDS:
            raise ValueError(f"blend_mode must be one of {list(BLEND_MODES)}, got {blend_mode!r}")
        base, top = match_channels(image_batch(image1, "image1"), image_batch(image2, "image2"))
        if base.shape != top.shape:
            top = common_upscale(top, base.shape[2], base.shape[1], "bicubic", "center")
        if top.shape[0] not in (1, base.shape[0]) and base.shape[0] != 1:
            raise ValueError(
                f"image2: a batch of {top.shape[0]} cannot be blended with a batch of "
                f"{base.shape[0]} (image1); use equal batches or a batch of 1"
            )
        factor = np.float32(blend_factor)
        blended = _BLENDS[blend_mode](base, top)
        result = base * (np.float32(1) - factor) + blended * factor
        return (np.clip(result, 0, 1).astype(np.float32, copy=False),)


NODE_CLASS_MAPPINGS: dict[str, type] = {"ImageBlur": ImageBlur, "ImageBlend": ImageBlend}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {"ImageBlur": "ImageBlur", "ImageBlend": "ImageBlend"}
