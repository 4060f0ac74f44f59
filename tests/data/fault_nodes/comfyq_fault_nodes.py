"""A custom node pack for the fault tests: a slow step that records each execution in Redis.

Every execution appends ``start`` and, if it completes, ``end`` entries (with its pid and process
group) to ``comfyq-test:executions:<run_id>``, so a test can prove no run ran twice at once.
"""

import os
import time

import redis

from comfyq.run_context import ProgressBar, current_context

#: Seconds between two progress reports (and cancellation points) of the slow step.
STEP_SECONDS = 0.05

_client = None


def _redis():
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["COMFYQ_REDIS_URL"], decode_responses=True)
    return _client


def executions_key(run_id):
    return f"comfyq-test:executions:{run_id}"


class FaultTestSlowStep:
    CATEGORY = "comfyq/testing"
    RETURN_TYPES = ()
    FUNCTION = "work"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seconds": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 600.0}),
                             "tag": ("STRING", {"default": ""})}}

    def work(self, seconds, tag):
        run_id = current_context().run_id
        entry = f"{os.getpid()}:{os.getpgrp()}:{time.time()!r}"
        _redis().rpush(executions_key(run_id), f"start:{entry}")
        steps = max(1, int(seconds / STEP_SECONDS))
        bar = ProgressBar(steps)
        for _ in range(steps):
            time.sleep(seconds / steps)
            bar.update(1)
        _redis().rpush(executions_key(run_id), f"end:{os.getpid()}:{os.getpgrp()}:{time.time()!r}")
        return {"ui": {"text": [f"{tag} done by {os.getpid()}"]}, "result": ()}


NODE_CLASS_MAPPINGS = {"FaultTestSlowStep": FaultTestSlowStep}
