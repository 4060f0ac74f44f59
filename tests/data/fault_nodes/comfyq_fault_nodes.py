"""A custom node pack for the fault tests: a slow step that records each execution in Redis,
and a step that hangs without ever reporting progress (a node blocked in C code, a hung download).

Every execution appends ``start`` and, if it completes, ``end`` (``abort`` when an error stops
it) entries (with its pid and process
group) to ``comfyq-test:executions:<run_id>``, so a test can prove no run ran twice at once and
see which process executed it.
"""

import os
import time

from comfyq.redis.connection import redis_client
from comfyq.run_context import ProgressBar, current_context

#: Seconds between two progress reports (and cancellation points) of the slow step.
STEP_SECONDS = 0.05

_client = None


def _redis():
    global _client
    if _client is None:
        # comfyq's own factory, so a Sentinel URL works too; retried through a failover.
        _client = redis_client(os.environ["COMFYQ_REDIS_URL"], retry_seconds=30)
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
        _record(run_id, "start")
        steps = max(1, int(seconds / STEP_SECONDS))
        bar = ProgressBar(steps)
        try:
            for _ in range(steps):
                time.sleep(seconds / steps)
                bar.update(1)
        except Exception:
            _record(run_id, "abort")  # stopped by an error (a cancel, Redis gone): it ended here
            raise
        _record(run_id, "end")
        return {"ui": {"text": [f"{tag} done by {os.getpid()}"]}, "result": ()}


class FaultTestHang(FaultTestSlowStep):
    """Sleeps ``seconds`` in one call: no progress report, so no point where a cancel or a time
    limit can stop it."""

    def work(self, seconds, tag):
        run_id = current_context().run_id
        _record(run_id, "start")
        time.sleep(seconds)
        _record(run_id, "end")
        return {"ui": {"text": [f"{tag} hung for {seconds:g} s in {os.getpid()}"]}, "result": ()}


#: Replicas each entry must reach before the node goes on (the failover test sets 1), so an
#: entry is not lost with a primary killed before it replicated.
REPLICAS = int(os.environ.get("COMFYQ_TEST_EXECUTIONS_REPLICAS", "0"))


def _record(run_id, kind):
    entry = f"{kind}:{os.getpid()}:{os.getpgrp()}:{time.time()!r}"
    _redis().rpush(executions_key(run_id), entry)
    if REPLICAS:
        _redis().execute_command("WAIT", REPLICAS, 200)


NODE_CLASS_MAPPINGS = {"FaultTestSlowStep": FaultTestSlowStep, "FaultTestHang": FaultTestHang}
