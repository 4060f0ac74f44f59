"""Shared by the CLI and metrics tests: the real ``comfyq`` command, and runs held mid-way.

A held run is an external image input served by :class:`GatedImageServer`: its worker executes
``ComfyUIDeployExternalImage`` (downloading the image) until the test opens the gate, so a test
can look at a running run, a busy worker and the runs queued behind it without guessing times.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Self

from PIL import Image

#: Longest a gated download waits for the gate (below the node's own 30 s download limit).
GATE_TIMEOUT_SECONDS = 25.0


def comfyq_command() -> list[str]:
    """The installed ``comfyq`` script beside this interpreter, else ``python -m comfyq.cli``."""
    script = shutil.which("comfyq", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "comfyq.cli"]


def run_comfyq(env: Mapping[str, str], *args: str, timeout: float = 60.0,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``comfyq ARGS`` to the end with the fleet's environment."""
    return subprocess.run([*comfyq_command(), *args], env={**os.environ, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def png_bytes(width: int = 6, height: int = 4, color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


class GatedImageServer:
    """A loopback HTTP server whose PNG answers wait to be let through: all at once by
    :meth:`open`, or one at a time by :meth:`step` (each wait ends after a timeout anyway)."""

    #: Permits that :meth:`open` hands out: more than any test downloads.
    OPEN_PERMITS = 10_000

    def __init__(self, body: bytes | None = None) -> None:
        self.body = body or png_bytes()
        self.requested = threading.Event()
        self._permits = threading.Semaphore(0)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, name: str = "picture.png") -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def urls(self, count: int) -> list[str]:
        return [self.url(f"image{number}.png") for number in range(count)]

    def open(self) -> None:
        self._permits.release(self.OPEN_PERMITS)

    def step(self) -> None:
        self._permits.release()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requested.set()
                server._permits.acquire(timeout=GATE_TIMEOUT_SECONDS)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *_: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.open()
        self._server.shutdown()
        self._server.server_close()


def held_graph(prefix: str = "held") -> dict[str, Any]:
    """External image -> invert -> save: it runs as long as its image download is held."""
    return {
        "1": {"class_type": "ComfyUIDeployExternalImage",
              "inputs": {"input_id": "picture", "default_value_url": ""}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


class OutputReader:
    """Reads a binary stream (a process's stderr) on a thread as it comes, so a test can wait
    for what a running command shows before acting."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        while chunk := os.read(stream.fileno(), 65536):
            self._chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def finish(self, timeout: float = 30.0) -> str:
        """Everything, once the stream has ended (the process exited)."""
        self._thread.join(timeout)
        return self.text()


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1,
               describe: Callable[[], object] | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that; fail after
    ``timeout`` seconds, saying what ``describe()`` returns then (the state it waited on)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"; {describe()}" if describe is not None else ""
            raise AssertionError(f"condition not met within {timeout} s{seen}")
        time.sleep(interval)
