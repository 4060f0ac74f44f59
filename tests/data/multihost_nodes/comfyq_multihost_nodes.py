"""A custom node pack for the multi-host test: an image passed through after a while, reporting
progress (so a run is mid-way long enough to cut its host off), optionally mixed with noise (an
incompressible, large output whose upload takes a while)."""

import time

import numpy as np

from comfyq.run_context import ProgressBar

#: Seconds between two progress reports (and cancellation points).
STEP_SECONDS = 0.1


class MultiHostSlowPass:
    CATEGORY = "comfyq/testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "work"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 600.0})},
                "optional": {"noise": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0})}}

    def work(self, image, seconds, noise=0.0):
        steps = max(1, int(seconds / STEP_SECONDS))
        bar = ProgressBar(steps)
        for _ in range(steps):
            time.sleep(seconds / steps)
            bar.update(1)
        return (_noisy(image, noise) if noise else image,)


def _noisy(image, share):
    noise = np.random.default_rng(0).random(tuple(image.shape), dtype=np.float32)
    if not isinstance(image, np.ndarray):  # a torch tensor, where torch imports
        import torch

        noise = torch.from_numpy(noise).to(image.device)
    return image * (1 - share) + noise * share


NODE_CLASS_MAPPINGS = {"MultiHostSlowPass": MultiHostSlowPass}
