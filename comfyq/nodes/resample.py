"""Image resizing with the pixels of ComfyUI's ``comfy.utils.common_upscale``.

ComfyUI resizes with ``torch.nn.functional.interpolate`` (``nearest-exact``, ``bilinear``,
``bicubic`` without corner alignment or antialiasing, ``area`` = adaptive average pooling) and
with Pillow for ``lanczos``. Here each method is a per-axis set of taps (source indices and
weights) computed the way torch's CPU kernels compute them, in float32, so the results agree
within float rounding. Width is resampled before height, as torch's separable kernels do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS = ("disabled", "center")

#: torch's bicubic uses Keys' cubic convolution with this A.
_CUBIC_A = np.float32(-0.75)

#: (source indices [out, taps], weights [out, taps]) for one axis.
Taps = tuple[np.ndarray, np.ndarray]


def common_upscale(images: np.ndarray, width: int, height: int, method: str,
                   crop: str = "disabled") -> np.ndarray:
    """Resize IMAGE ``images`` ``[B, H, W, C]`` to ``[B, height, width, C]``.

    :param method: one of :data:`UPSCALE_METHODS`.
    :param crop: ``"center"`` first crops the middle of the image to the target aspect ratio.
    """
    if method not in UPSCALE_METHODS:
        raise ValueError(f"upscale_method must be one of {list(UPSCALE_METHODS)}, got {method!r}")
    if crop not in CROP_METHODS:
        raise ValueError(f"crop must be one of {list(CROP_METHODS)}, got {crop!r}")
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize to {width}x{height}: width and height must be at least 1")
    if crop == "center":
        images = center_crop_to_aspect(images, width / height)
    if method == "lanczos":
        return _lanczos(images, width, height)
    taps_for = _TAPS[method]
    resized = _resample_axis(images, taps_for(images.shape[2], width), axis=2)
    return _resample_axis(resized, taps_for(images.shape[1], height), axis=1)


def center_crop_to_aspect(images: np.ndarray, aspect: float) -> np.ndarray:
    """The middle of each image with width/height ``aspect``, trimmed as ComfyUI trims it."""
    old_height, old_width = images.shape[1], images.shape[2]
    old_aspect = old_width / old_height
    x = y = 0
    if old_aspect > aspect:
        x = round((old_width - old_width * (aspect / old_aspect)) / 2)
    elif old_aspect < aspect:
        y = round((old_height - old_height * (old_aspect / aspect)) / 2)
    return images[:, y:old_height - y, x:old_width - x, :]


def _resample_axis(images: np.ndarray, taps: Taps, axis: int) -> np.ndarray:
    indices, weights = taps
    shape = [1] * images.ndim
    shape[axis] = weights.shape[0]
    result = np.zeros(images.shape[:axis] + (weights.shape[0],) + images.shape[axis + 1:],
                      dtype=np.float32)
    for tap in range(indices.shape[1]):
        result += np.take(images, indices[:, tap], axis=axis) * weights[:, tap].reshape(shape)
    return result


def _scale(in_size: int, out_size: int) -> np.float32:
    """torch's ``area_pixel_compute_scale`` when a size (not a factor) is given."""
    return np.float32(in_size) / np.float32(out_size)


def _nearest_exact_taps(in_size: int, out_size: int) -> Taps:
    outputs = np.arange(out_size, dtype=np.float64)
    source = np.floor(((outputs + 0.5) * np.float64(_scale(in_size, out_size))).astype(np.float32))
    indices = np.minimum(source.astype(np.int64), in_size - 1)
    return indices[:, None], np.ones((out_size, 1), dtype=np.float32)


def _source_positions(in_size: int, out_size: int) -> np.ndarray:
    """torch's ``area_pixel_compute_source_index`` without corner alignment, in float32."""
    outputs = np.arange(out_size, dtype=np.float32)
    return _scale(in_size, out_size) * (outputs + np.float32(0.5)) - np.float32(0.5)


def _index_and_fraction(real: np.ndarray, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's ``guard_index_and_lambda``: floor index (capped at the end), fraction in 0..1."""
    index = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    fraction = np.clip(real - index.astype(np.float32), 0, 1).astype(np.float32)
    return index, fraction


def _bilinear_taps(in_size: int, out_size: int) -> Taps:
    real = np.maximum(_source_positions(in_size, out_size), np.float32(0))
    index, fraction = _index_and_fraction(real, in_size)
    following = index + (index < in_size - 1)
    weights = np.stack([np.float32(1) - fraction, fraction], axis=1)
    return np.stack([index, following], axis=1), weights


def _cubic_near(x: np.ndarray) -> np.ndarray:
    """Keys' kernel for |x| <= 1."""
    a = _CUBIC_A
    return ((a + 2) * x - (a + 3)) * x * x + 1


def _cubic_far(x: np.ndarray) -> np.ndarray:
    """Keys' kernel for 1 < |x| < 2."""
    a = _CUBIC_A
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a


def _bicubic_taps(in_size: int, out_size: int) -> Taps:
    index, t = _index_and_fraction(_source_positions(in_size, out_size), in_size)
    one = np.float32(1)
    weights = np.stack(
        [_cubic_far(t + one), _cubic_near(t), _cubic_near(one - t), _cubic_far(one - t + one)],
        axis=1,
    ).astype(np.float32)
    indices = np.clip(index[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
    return indices, weights


def _area_taps(in_size: int, out_size: int) -> Taps:
    """torch's adaptive average pooling: output i averages [floor(i*in/out), ceil((i+1)*in/out))."""
    starts = [(i * in_size) // out_size for i in range(out_size)]
    ends = [-((-(i + 1) * in_size) // out_size) for i in range(out_size)]
    width = max(end - start for start, end in zip(starts, ends, strict=True))
    indices = np.zeros((out_size, width), dtype=np.int64)
    weights = np.zeros((out_size, width), dtype=np.float32)
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        indices[i, :end - start] = np.arange(start, end)
        weights[i, :end - start] = np.float32(1) / np.float32(end - start)
    return indices, weights


_TAPS: dict[str, Callable[[int, int], Taps]] = {
    "nearest-exact": _nearest_exact_taps,
    "bilinear": _bilinear_taps,
    "bicubic": _bicubic_taps,
    "area": _area_taps,
}


def _lanczos(images: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's Lanczos on 8-bit pixels, as ComfyUI does (so the result is quantised).

    RGB and RGBA images are resized whole (Pillow premultiplies alpha for RGBA); images with
    other channel counts, which ComfyUI cannot resize this way, channel by channel.
    """
    quantised = to_uint8(images)
    batch, _, _, channels = images.shape
    result = np.empty((batch, height, width, channels), dtype=np.float32)
    for b in range(batch):
        if channels in (3, 4):
            planes = [np.ascontiguousarray(quantised[b])]
        else:
            planes = [np.ascontiguousarray(quantised[b, :, :, c]) for c in range(channels)]
        resized = [np.asarray(Image.fromarray(plane).resize(
            (width, height), resample=Image.Resampling.LANCZOS)) for plane in planes]
        stacked = resized[0] if channels in (3, 4) else np.stack(resized, axis=-1)
        result[b] = stacked.astype(np.float32) / np.float32(255)
    return result


def to_uint8(images: np.ndarray) -> np.ndarray:
    """0..1 floats to 8-bit the way ComfyUI does it everywhere: scale, clip, truncate."""
    return np.clip(np.float32(255) * images, 0, 255).astype(np.uint8)


def scaled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """ImageScaleBy's target size: Python's round of each side times ``factor``."""
    return round(width * factor), round(height * factor)


def keep_aspect(old_width: int, old_height: int, width: int, height: int) -> tuple[int, int]:
    """ImageScale's rule: a 0 side follows the other side's ratio (at least 1 pixel)."""
    if width == 0:
        width = max(1, round(old_width * height / old_height))
    elif height == 0:
        height = max(1, round(old_height * width / old_width))
    return width, height


__all__ = [
    "CROP_METHODS", "UPSCALE_METHODS", "center_crop_to_aspect", "common_upscale", "keep_aspect",
    "scaled_size", "to_uint8",
]
