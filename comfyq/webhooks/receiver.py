"""A webhook receiver on loopback that checks every signature: for tests, benchmarks and demos.

It is a real threaded HTTP/1.1 server (keep-alive, like most receivers) that verifies each
delivery with the published `standardwebhooks` package, exactly as a receiver would, and
answers what a script says: a status, headers, a body, a delay, or an endless body. It can be
stopped and started again on the same port to play a receiver that is down for a while.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Reply:
    """How the receiver answers one delivery."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"status":"ok"}'
    delay: float = 0.0       # seconds to wait before answering
    endless: bool = False    # stream body bytes until the sender hangs up


@dataclass
class Received:
    """One delivery as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    verified: bool
    verify_error: str | None
    reply: Reply
    peer: tuple[str, int]    # the sender's address and port: one port per connection
    at: float = field(default_factory=time.time)
    answered: bool = False   # the reply went out (a delayed one may never)

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def accepted(self) -> bool:
        return self.verified and self.answered and 200 <= self.reply.status < 300


Script = Callable[[int, bytes], Reply]


def always(reply: Reply) -> Script:
    return lambda index, body: reply


def sequence(*replies: Reply, then: Reply = Reply()) -> Script:
    """The given replies in turn, then `then` for every later delivery."""
    return lambda index, body: replies[index] if index < len(replies) else then


class SigningReceiver:
    """Use as `with SigningReceiver(secret) as receiver:`; deliveries go to `receiver.url`.

    :param secret: the `whsec_...` secret to verify with; a delivery that fails verification
        is answered 401 (the sender should then dead-letter it).
    :param script: `script(index, body) -> Reply` for the index-th delivery; 200 when None.
    """

    def __init__(self, secret: str, script: Script | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.verifier = Webhook(secret)
        self.script = script or always(Reply())
        self.host = host
        self.port = port
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()
        # Open connections, so that stopping also ends kept-alive ones (a real outage does).
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        headers = dict(handler.headers.items())
        try:
            self.verifier.verify(body, headers)
            verified, problem = True, None
        except (WebhookVerificationError, ValueError) as error:
            verified, problem = False, str(error)
        with self._changed:
            reply = self.script(len(self.received), body) if verified else Reply(401)
            received = Received(headers, body, verified, problem, reply,
                                handler.client_address[:2])
            self.received.append(received)
            self._changed.notify_all()
        if self._answer(handler, reply):
            with self._changed:
                received.answered = True
                self._changed.notify_all()

    def _answer(self, handler: BaseHTTPRequestHandler, reply: Reply) -> bool:
        """Send `reply`; False when it could not be (stopped, or the sender hung up)."""
        if reply.delay and self._stopping.wait(reply.delay):
            return False
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        if reply.endless:
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.close_connection = True
            chunk = b"x" * 65536
            try:
                while not self._stopping.is_set():
                    handler.wfile.write(chunk)
            except OSError:
                pass  # the sender hung up, as it should
            return True
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        try:
            handler.wfile.write(reply.body)
            handler.wfile.flush()
        except OSError:
            return False
        return True

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in separate writes; Nagle would hold the body back until
            # the sender's delayed ACK (40 ms), capping a kept-alive connection at 25 req/s.
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with receiver._changed:
                    receiver._connections.add(self.connection)

            def finish(self) -> None:
                with receiver._changed:
                    receiver._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, *args: Any) -> None:
                return None

        return Handler

    def start(self) -> SigningReceiver:
        """Listen (again) on the receiver's port."""
        self._stopping.clear()
        self._server = ThreadingHTTPServer((self.host, self.port), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._changed:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the other side

    def accepted(self) -> list[Received]:
        """Verified deliveries answered with a 2xx, in arrival order."""
        with self._changed:
            return [item for item in self.received if item.accepted]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float) -> bool:
        """Wait until `predicate(every delivery received)` holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self.received)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def __enter__(self) -> SigningReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
