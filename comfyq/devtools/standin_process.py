"""The stand-in ComfyUI as a separate process, for tests that kill and restart the server."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import requests


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StandinProcess:
    """``python -m comfyq.devtools.comfyui_standin`` on a fixed port, killable and restartable.

    :param root: the server's folder (kept across restarts, as a real server's disk is).
    :param port: its port (a free one by default; kept across restarts).
    :param extra_args: more stand-in options (``--hide-class``, ``--response-delay``).
    :param log_path: where its output goes (discarded by default).
    """

    def __init__(self, root: Path, port: int | None = None, extra_args: Sequence[str] = (),
                 log_path: Path | None = None) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Self:
        command = [sys.executable, "-m", "comfyq.devtools.comfyui_standin", "--port",
                   str(self.port), "--root", str(self.root), *self.extra_args]
        with contextlib.ExitStack() as files:
            output: Any = subprocess.DEVNULL
            if self.log_path:
                output = files.enter_context(open(self.log_path, "ab"))
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the stand-in exited with code {self.process.returncode}")
            try:
                requests.get(self.url + "/system_stats", timeout=1).raise_for_status()
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise TimeoutError(f"the stand-in at {self.url} did not answer within {timeout:g} s")

    def kill(self) -> None:
        """SIGKILL: the server dies at once, its memory (queue, history) lost."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, timeout: float = 60.0) -> None:
        self.kill()
        self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
