"""Headers every answer of the API carries unless its route sets its own.

Answers hold runs' inputs, outputs and errors, so no cache may keep them (``no-store``; pages and
files that may be cached say so themselves), and no browser may read one as another type.
Refusals made before routing (401, 413) carry them too: this is the outermost middleware.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff"}


class DefaultHeadersMiddleware:
    """Add each of ``headers`` to an HTTP answer that does not set it."""

    def __init__(self, app: ASGIApp, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = DEFAULT_HEADERS if headers is None else headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_defaults(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_defaults)
