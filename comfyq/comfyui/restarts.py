"""What a worker does about its ComfyUI server when a prompt does not stop after a cancel or a
time limit (a node without progress callbacks cannot be interrupted).

A server comfyq launched (``comfyq worker --comfyui-path``) is restarted: the worker creates the
device's restart-request file and the supervisor kills the server and starts it again, freeing
its GPU; the next prompt waits for the new server as at startup. A server attached by URL
cannot be restarted from here: it stays busy until the node returns, and the run says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comfyq.comfyui.backend import ComfyUIOptions

logger = logging.getLogger(__name__)


class StuckServerRestarts:
    """The restarts one worker asks for its server; one per backend."""

    def __init__(self, options: ComfyUIOptions) -> None:
        self.options = options
        #: Set once a restart was asked for, until the next prompt waited for it.
        self.pending = False

    def restart(self, prompt_id: str) -> str:
        """Ask for the restart of a server stuck in ``prompt_id`` when comfyq launched it; says
        what became of the server, for the run's error."""
        stuck = (f"ComfyUI at {self.options.url} did not stop the prompt within "
                 f"{self.options.interrupt_grace:g} s")
        request = self.options.restart_request
        if request is None:
            logger.warning("run %s: %s; it is attached by URL, so it keeps executing the prompt",
                           prompt_id, stuck)
            return (f"{stuck}; it is attached by URL, so comfyq cannot restart it: it stays busy "
                    "(with its GPU) until the node returns")
        request.parent.mkdir(parents=True, exist_ok=True)
        request.touch()
        self.pending = True
        logger.warning("run %s: %s; asked its supervisor to restart it", prompt_id, stuck)
        return f"{stuck}, so the server was restarted"

    def wait_before_next_prompt(self, check_cancelled: Callable[[], None],
                                pause: float) -> float:
        """How long the next prompt may wait for the server to answer; after a restart was asked
        for, first wait until the supervisor took the request (the stuck server is gone)."""
        if not self.pending:
            return self.options.unavailable_seconds
        deadline = time.monotonic() + self.options.startup_seconds
        while self.options.restart_request.exists() and time.monotonic() < deadline:
            check_cancelled()
            time.sleep(pause)
        self.pending = False
        return max(deadline - time.monotonic(), self.options.unavailable_seconds)
