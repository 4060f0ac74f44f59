"""Redis databases handed out to tests, so no two tests (or fixtures) ever share one.

The test session starts its own server; database 0 belongs to the session's worker fleet and
every other database is lent to one test or fixture at a time, emptied before it is lent and
after it comes back. Nothing here ever touches a server the session did not start.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis

#: Databases the test server is started with (Valkey's default is 16).
DATABASES = 64
#: The session fleet's database.
FLEET_DATABASE = 0


class DatabasePool:
    """Lends the databases of one server, lowest free number first.

    :param server_url: the server's URL without a database (``redis://127.0.0.1:PORT``).
    """

    def __init__(self, server_url: str, count: int = DATABASES) -> None:
        self.server_url = server_url
        self._free = set(range(FLEET_DATABASE + 1, count))
        self._lock = threading.Lock()

    def url(self, number: int) -> str:
        return f"{self.server_url}/{number}"

    @contextlib.contextmanager
    def lend(self) -> Iterator[str]:
        """The URL of a database of its own, empty, for the ``with`` block."""
        with self._lock:
            if not self._free:
                raise RuntimeError(f"all {DATABASES - 1} test databases are lent out")
            number = min(self._free)
            self._free.remove(number)
        url = self.url(number)
        self._empty(url)
        try:
            yield url
        finally:
            self._empty(url)
            with self._lock:
                self._free.add(number)

    @staticmethod
    def _empty(url: str) -> None:
        with redis.Redis.from_url(url) as client:
            client.flushdb()
