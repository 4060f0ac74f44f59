"""ComfyUI's mask nodes that convert between masks and images or make a solid mask."""

from __future__ import annotations

import numpy as np

from comfyq.nodes.common import MAX_RESOLUTION, as_numpy, image_batch, mask_batch

CHANNELS = ("red", "green", "blue", "alpha")


class SolidMask:
    """One ``[1, height, width]`` mask filled with ``value``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
            "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
        }}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "solid"
    CATEGORY = "mask"

    def solid(self, value: float, width: int, height: int) -> tuple[np.ndarray]:
        return (np.full((1, height, width), value, dtype=np.float32),)


class MaskToImage:
    """A grey RGB image whose three channels all equal the mask."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"mask": ("MASK",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mask_to_image"
    CATEGORY = "mask"

    def mask_to_image(self, mask: np.ndarray) -> tuple[np.ndarray]:
        mask = np.asarray(as_numpy(mask))
        masks = mask_batch(mask.reshape((-1,) + mask.shape[-2:]))
        return (np.repeat(masks[..., None], 3, axis=-1),)


class ImageToMask:
    """One channel of an image as a mask."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"image": ("IMAGE",), "channel": (list(CHANNELS),)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"
    CATEGORY = "mask"

    def image_to_mask(self, image: np.ndarray, channel: str) -> tuple[np.ndarray]:
        image = image_batch(image)
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {list(CHANNELS)}, got {channel!r}")
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(
                f"channel: the image has {image.shape[-1]} channels, so it has no {channel!r} "
                f"channel"
            )
        return (image[..., index].copy(),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "SolidMask": SolidMask,
    "MaskToImage": MaskToImage,
    "ImageToMask": ImageToMask,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "SolidMask": "SolidMask",
    "MaskToImage": "Convert Mask to Image",
    "ImageToMask": "Convert Image to Mask",
}
