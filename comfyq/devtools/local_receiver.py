"""A webhook receiver on loopback that records what it gets: for the demo and for tests.

It is a real HTTP server (``http.server`` in a thread). ``answers`` scripts its replies, e.g.
``[500, 500]`` answers 500 to the first two deliveries and 200 to every later one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    status_answered: int
    received_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """Start with ``with WebhookReceiver() as receiver:``; ``receiver.url`` takes deliveries."""

    def __init__(self, answers: list[int] | None = None, host: str = "127.0.0.1") -> None:
        self.answers = list(answers or [])
        self.deliveries: list[Delivery] = []
        self._lock = threading.Condition()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.deliveries.append(
                        Delivery(self.path, dict(self.headers.items()), body, status))
                    receiver._lock.notify_all()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "ok"}' if status < 400 else b'{"status": "error"}')

            def log_message(self, *args: Any) -> None:
                return None

        return Handler

    def accepted(self) -> list[Delivery]:
        """Deliveries answered with a 2xx, in arrival order."""
        with self._lock:
            return [d for d in self.deliveries if 200 <= d.status_answered < 300]

    def wait_for(self, predicate: Callable[[list[Delivery]], bool], timeout: float) -> bool:
        """Wait until ``predicate(accepted deliveries)`` holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate([d for d in self.deliveries if 200 <= d.status_answered < 300]):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
