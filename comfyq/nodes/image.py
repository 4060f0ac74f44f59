"""ComfyUI's model-free image nodes: create, invert, resize, crop, flip and rotate images."""

from __future__ import annotations

import numpy as np

from comfyq.nodes.common import MAX_RESOLUTION, image_batch
from comfyq.nodes.resample import (
    CROP_METHODS,
    UPSCALE_METHODS,
    common_upscale,
    keep_aspect,
    scaled_size,
)


def _size_input(default: int, minimum: int) -> tuple[str, dict]:
    return ("INT", {"default": default, "min": minimum, "max": MAX_RESOLUTION, "step": 1})


class EmptyImage:
    """A batch of images filled with one colour given as 0xRRGGBB."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "width": _size_input(512, 1),
            "height": _size_input(512, 1),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1,
                              "display": "color"}),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = "image"

    def generate(self, width: int, height: int, batch_size: int = 1,
                 color: int = 0) -> tuple[np.ndarray]:
        rgb = [((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0)]
        image = np.empty((batch_size, height, width, 3), dtype=np.float32)
        image[...] = np.asarray(rgb, dtype=np.float32)
        return (image,)


class ImageInvert:
    """1 - x for every channel (alpha included, as in ComfyUI)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"
    CATEGORY = "image"

    def invert(self, image: np.ndarray) -> tuple[np.ndarray]:
        return (np.float32(1.0) - image_batch(image),)


class ImageScale:
    """Resize to a width and height; a 0 side keeps the aspect ratio, both 0 leaves it as is."""

    upscale_methods = list(UPSCALE_METHODS)
    crop_methods = list(CROP_METHODS)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "image": ("IMAGE",),
            "upscale_method": (cls.upscale_methods,),
            "width": _size_input(512, 0),
            "height": _size_input(512, 0),
            "crop": (cls.crop_methods,),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image: np.ndarray, upscale_method: str, width: int, height: int,
                crop: str) -> tuple[np.ndarray]:
        image = image_batch(image)
        if width == 0 and height == 0:
            return (image,)
        width, height = keep_aspect(image.shape[2], image.shape[1], width, height)
        return (common_upscale(image, width, height, upscale_method, crop),)


class ImageScaleBy:
    """Resize both sides by one factor (each side rounded to the nearest pixel)."""

    upscale_methods = list(UPSCALE_METHODS)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "image": ("IMAGE",),
            "upscale_method": (cls.upscale_methods,),
            "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image: np.ndarray, upscale_method: str,
                scale_by: float) -> tuple[np.ndarray]:
        image = image_batch(image)
        width, height = scaled_size(image.shape[2], image.shape[1], scale_by)
        if width < 1 or height < 1:
            raise ValueError(
                f"scale_by: {scale_by} turns a {image.shape[2]}x{image.shape[1]} image into "
                f"{width}x{height}; the result needs at least one pixel per side"
            )
        return (common_upscale(image, width, height, upscale_method, "disabled"),)


class ImageCrop:
    """The width x height region at (x, y); a start past the edge moves to the last pixel."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "image": ("IMAGE",),
            "width": _size_input(512, 1),
            "height": _size_input(512, 1),
            "x": _size_input(0, 0),
            "y": _size_input(0, 0),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "crop"
    CATEGORY = "image/transform"

    def crop(self, image: np.ndarray, width: int, height: int, x: int,
             y: int) -> tuple[np.ndarray]:
        image = image_batch(image)
        x = min(x, image.shape[2] - 1)
        y = min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


class ImageFlip:
    """Mirror top-bottom ("x-axis: vertically") or left-right ("y-axis: horizontally")."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "image": ("IMAGE",),
            "flip_method": (["x-axis: vertically", "y-axis: horizontally"],),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "flip"
    CATEGORY = "image/transform"

    def flip(self, image: np.ndarray, flip_method: str) -> tuple[np.ndarray]:
        image = image_batch(image)
        if flip_method.startswith("x"):
            return (image[:, ::-1, :, :].copy(),)
        if flip_method.startswith("y"):
            return (image[:, :, ::-1, :].copy(),)
        raise ValueError(
            f"flip_method must be 'x-axis: vertically' or 'y-axis: horizontally', "
            f"got {flip_method!r}"
        )


class ImageRotate:
    """Rotate clockwise by 90, 180 or 270 degrees."""

    rotations = ["none", "90 degrees", "180 degrees", "270 degrees"]

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"image": ("IMAGE",), "rotation": (cls.rotations,)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "rotate"
    CATEGORY = "image/transform"

    def rotate(self, image: np.ndarray, rotation: str) -> tuple[np.ndarray]:
        image = image_batch(image)
        if rotation not in self.rotations:
            raise ValueError(f"rotation must be one of {self.rotations}, got {rotation!r}")
        quarter_turns = self.rotations.index(rotation)
        # Turning from the width axis towards the height axis is clockwise on screen.
        return (np.ascontiguousarray(np.rot90(image, k=quarter_turns, axes=(2, 1))),)


class RebatchImages:
    """ComfyUI's ``RebatchImages``: the images of every batch in the list, regrouped into
    batches of ``batch_size`` (the last may be smaller)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"images": ("IMAGE",),
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    RETURN_TYPES = ("IMAGE",)
    INPUT_IS_LIST = True
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "rebatch"
    CATEGORY = "image/batch"

    def rebatch(self, images: list, batch_size: list[int]) -> tuple[list[np.ndarray]]:
        size = batch_size[0]
        singles = [batch[index:index + 1] for position, value in enumerate(images)
                   for batch in [image_batch(value, f"images[{position}]")]
                   for index in range(batch.shape[0])]
        return ([np.concatenate(singles[start:start + size]) for start in
                 range(0, len(singles), size)],)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "EmptyImage": EmptyImage,
    "ImageInvert": ImageInvert,
    "ImageScale": ImageScale,
    "ImageScaleBy": ImageScaleBy,
    "ImageCrop": ImageCrop,
    "ImageFlip": ImageFlip,
    "ImageRotate": ImageRotate,
    "RebatchImages": RebatchImages,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "EmptyImage": "EmptyImage",
    "ImageInvert": "Invert Image",
    "ImageScale": "Upscale Image",
    "ImageScaleBy": "Upscale Image By",
    "ImageCrop": "Image Crop",
    "ImageFlip": "ImageFlip",
    "ImageRotate": "ImageRotate",
    "RebatchImages": "Rebatch Images",
}
