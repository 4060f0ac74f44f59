"""The websocket of one ComfyUI client id, read by a background thread.

A reader thread blocks on the socket and queues each JSON frame (binary preview frames are
dropped), so the run loop can wait for a frame with a timeout without ever cutting a frame in
half. A connection that breaks surfaces as :class:`EventStreamLost` from :meth:`next`; frames of
an earlier connection are never mixed into a later one.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import websocket


class EventStreamLost(ConnectionError):
    """The websocket closed or broke; reconnect and recover the state over HTTP."""


class EventStream:
    """Frames of ``/ws?clientId=...`` as dicts ``{"type", "data"}``.

    :param url: the websocket URL, client id included.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._frames: queue.Queue[tuple[int, Any]] = queue.Queue()
        self._socket: websocket.WebSocket | None = None
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._socket is not None

    def connect(self, timeout: float) -> None:
        """(Re)connect; raises :class:`EventStreamLost` when the server does not accept."""
        self.close()
        try:
            socket = websocket.create_connection(self.url, timeout=timeout,
                                                 skip_utf8_validation=True)
        except (OSError, websocket.WebSocketException) as error:
            raise EventStreamLost(f"websocket {self.url}: cannot connect: {error}") from None
        socket.settimeout(None)
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._socket = socket
        threading.Thread(target=self._read, args=(socket, generation),
                         name="comfyui-events", daemon=True).start()

    def _read(self, socket: websocket.WebSocket, generation: int) -> None:
        try:
            while True:
                opcode, data = socket.recv_data()
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self._frames.put((generation, json.loads(data)))
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise EventStreamLost(f"websocket {self.url}: the server closed it")
        except Exception as error:  # noqa: BLE001 (whatever broke the connection is reported)
            lost = error if isinstance(error, EventStreamLost) else EventStreamLost(
                f"websocket {self.url}: connection lost: {error or type(error).__name__}")
            self._frames.put((generation, lost))

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next frame, or None after ``timeout`` seconds without one.

        :raises EventStreamLost: the connection broke (or was never made).
        """
        if self._socket is None:
            raise EventStreamLost(f"websocket {self.url}: not connected")
        deadline = time.monotonic() + timeout
        while True:
            try:
                generation, item = self._frames.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if generation != self._generation:
                continue  # left over from an earlier connection
            if isinstance(item, EventStreamLost):
                self._forget(generation)
                raise item
            return item

    def drain(self) -> None:
        """Drop the frames queued so far (between runs: other clients' broadcasts).

        A connection found lost on the way is marked so (:attr:`connected` turns false).
        """
        while True:
            try:
                generation, item = self._frames.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, EventStreamLost) and generation == self._generation:
                self._forget(generation)

    def _forget(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._socket = None

    def close(self) -> None:
        with self._lock:
            socket, self._socket = self._socket, None
            self._generation += 1
        if socket is not None:
            # Not a closing handshake: the reader thread holds the socket's read lock while it
            # waits, so a graceful close would wait on a frozen server forever. Shutting the
            # socket down wakes the reader, which then ends.
            try:
                socket.abort()
                socket.shutdown()
            except (OSError, websocket.WebSocketException):
                pass
