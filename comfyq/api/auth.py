"""Bearer-token authentication of every request, before anything else reads it.

It is ASGI middleware rather than a FastAPI dependency so that a request without a valid token
gets 401 and nothing else: its body is never read, parsed or size-checked, and an unknown path
answers 401 too, so the API's shape is not revealed to strangers. Health, readiness and the
OpenAPI documents are public (probes and browsers send no token; the documents hold no data).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Collection, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

#: What a refused request is told, always the same whatever was wrong with its token.
UNAUTHORIZED_BODY = json.dumps({"detail": "missing or invalid bearer token"}).encode()


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


class BearerAuthMiddleware:
    """Refuse with 401 every HTTP request whose bearer token is not one of ``tokens``.

    :param public_paths: exact paths served without a token.
    """

    def __init__(self, app: ASGIApp, tokens: Collection[str], public_paths: Collection[str]) -> None:
        self.app = app
        self.tokens = [token.encode() for token in tokens]
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        if token is not None and self._known(token):
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(UNAUTHORIZED_BODY)).encode()),
            (b"www-authenticate", b'Bearer realm="comfyq"'),
        ]})
        await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})

    def _known(self, token: bytes) -> bool:
        # Compare with every token, in constant time, so timing tells nothing about any of them.
        matches = [hmac.compare_digest(token, known) for known in self.tokens]
        return any(matches)
