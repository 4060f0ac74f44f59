"""A custom node pack for the multi-host test: an image passed through unchanged after a while,
reporting progress (so a run is mid-way long enough to cut its host off)."""

import time

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
                             "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 600.0})}}

    def work(self, image, seconds):
        steps = max(1, int(seconds / STEP_SECONDS))
        bar = ProgressBar(steps)
        for _ in range(steps):
            time.sleep(seconds / steps)
            bar.update(1)
        return (image,)


NODE_CLASS_MAPPINGS = {"MultiHostSlowPass": MultiHostSlowPass}
