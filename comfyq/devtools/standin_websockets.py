"""The stand-in ComfyUI's websockets: ``/ws?clientId=``, frame delivery, dropped connections.

Frames are queued from any thread (:meth:`WebsocketHub.emit`) and sent by one task on the
server's event loop, so every client sees them in the order they were emitted. As in ComfyUI, a
new connection first gets ``status`` with its ``sid``, and what clients send is read and ignored.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from comfyq.devtools.standin_queue import EVERYONE

#: The name of the thread that runs the server's event loop.
HTTP_THREAD_NAME = "standin-http"


class WebsocketHub:
    """The connected clients of one stand-in server.

    :param queue_remaining: how many prompts are pending or running (for the first ``status``).
    """

    def __init__(self, queue_remaining: Callable[[], int]) -> None:
        self.queue_remaining = queue_remaining
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.refuse_until = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[tuple[str, str]] | None = None

    def open(self) -> None:
        """Bind to the running event loop (call from it, before serving)."""
        self.loop = asyncio.get_running_loop()
        self._outbox = asyncio.Queue()

    def emit(self, event: str, data: dict[str, Any], target: str | None) -> None:
        """Queue a frame for ``target`` (a client id, EVERYONE, or None: nobody); thread-safe."""
        if target is None or self.loop is None or self._outbox is None:
            return
        text = json.dumps({"type": event, "data": data})
        try:
            self.loop.call_soon_threadsafe(self._outbox.put_nowait, (target, text))
        except RuntimeError:  # the loop is closed: the server is stopping
            pass

    async def send_frames(self) -> None:
        """Deliver queued frames one at a time, so every client sees them in emit order."""
        assert self._outbox is not None
        while True:
            target, text = await self._outbox.get()
            sockets = list(self.sockets.values()) if target == EVERYONE else [
                socket for socket in (self.sockets.get(target),) if socket is not None]
            for socket in sockets:
                try:
                    await socket.send_str(text)
                except (ConnectionError, RuntimeError):
                    pass  # a closing socket; its handler removes it

    def drop(self, refuse_seconds: float = 0.0) -> None:
        """Close every websocket now and refuse new ones for ``refuse_seconds``; thread-safe."""
        self.refuse_until = time.monotonic() + refuse_seconds
        if self.loop is None:
            return
        closing = asyncio.run_coroutine_threadsafe(self.close_all(), self.loop)
        if threading.current_thread().name != HTTP_THREAD_NAME:
            closing.result(timeout=10)

    async def drop_now(self, refuse_seconds: float = 0.0) -> None:
        """:meth:`drop` from the server's event loop."""
        self.refuse_until = time.monotonic() + refuse_seconds
        await self.close_all()

    async def close_all(self) -> None:
        sockets, self.sockets = list(self.sockets.values()), {}
        for socket in sockets:
            await socket.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /ws?clientId=``: one client's connection, until it closes."""
        if time.monotonic() < self.refuse_until:
            return web.Response(status=503)
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = socket
        await socket.send_str(json.dumps({"type": "status", "data": {
            "status": {"exec_info": {"queue_remaining": self.queue_remaining()}}, "sid": sid}}))
        try:
            async for _ in socket:
                pass  # ComfyUI reads and ignores what clients send
        finally:
            if self.sockets.get(sid) is socket:
                del self.sockets[sid]
        return socket
