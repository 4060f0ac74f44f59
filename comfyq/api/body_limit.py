"""Refuse request bodies over a size limit with 413, whether or not they declare their length.

A declared ``Content-Length`` over the limit is refused before one byte is read. A body sent
without one (chunked) is counted as it arrives and refused as soon as it passes the limit, so a
client cannot make the server buffer more than the limit by not announcing its size. The body
read so far is handed to the application as one message, which is what the routes read anyway.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: What reading a body returns when the client disconnected before sending all of it.
_DISCONNECTED = object()


def _too_large_body(limit: int) -> bytes:
    return json.dumps({"detail": f"request body is larger than the limit of {limit} bytes "
                                 "(COMFYQ_API_MAX_BODY_BYTES)"}).encode()


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, or None when absent or not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Answer 413 to a request whose body exceeds ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = declared_length(scope)
        if length is not None and length > self.max_bytes:
            await self._refuse(send)
            return
        body = await self._read_within_limit(receive)
        if body is _DISCONNECTED:
            return  # nobody is left to answer, and a partial body must not be acted on
        if body is None:
            await self._refuse(send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_within_limit(self, receive: Receive) -> bytes | object | None:
        """The whole body; None as soon as it passes the limit; _DISCONNECTED if the client left."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _DISCONNECTED
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, send: Send) -> None:
        body = _too_large_body(self.max_bytes)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then the real channel (disconnects)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
