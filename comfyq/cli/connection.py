"""How the command line reaches Redis: quickly giving up, and naming where without secrets."""

from __future__ import annotations

from typing import Any

import redis

from comfyq.redis.connection import QUICK_TIMEOUT_SECONDS, redis_location
from comfyq.redis.connection import redis_client as connect
from comfyq.settings import get_settings

#: Seconds to wait for Redis to connect or answer before the command gives up.
REDIS_TIMEOUT_SECONDS = QUICK_TIMEOUT_SECONDS


def redis_failure(error: Exception) -> str:
    """What a command prints when Redis failed it: where (without secrets), and why."""
    return f"Redis at {redis_location(get_settings().redis_url)} failed: {error}"


def redis_client(url: str | None = None) -> redis.Redis:
    """A client of the run records' Redis that gives up quickly when nothing answers."""
    return connect(url or get_settings().redis_url, timeout=REDIS_TIMEOUT_SECONDS)


def cli_client() -> Any:
    """A :class:`comfyq.Client` whose Redis connection gives up quickly."""
    from comfyq.producer.client import Client

    return Client(redis_client=redis_client())
