"""The one place comfyq makes Redis clients, so every process talks to Redis the same way.

Every client decodes replies to ``str`` (records are JSON text) and checks an idle connection's
health before reusing it. What differs is named by the caller: ``timeout`` for interactive
commands and scrapes that must give up quickly, ``retry_seconds`` for writers that ride out a Redis
restart (their writes are idempotent).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from comfyq.redis_urls import is_sentinel, parse_sentinel_url, redis_location

__all__ = ["async_redis_client", "redis_client", "redis_location", "retries_within"]

#: Seconds between health checks of an idle pooled connection.
HEALTH_CHECK_INTERVAL_SECONDS = 30
#: Seconds an interactive command or a scrape waits for Redis before it gives up.
QUICK_TIMEOUT_SECONDS = 5.0
#: Longest wait between two retries of a command through a broken connection.
RETRY_CAP_SECONDS = 1.0
#: The first wait; each next one doubles, up to the cap.
RETRY_BASE_SECONDS = 0.05


def retries_within(seconds: float) -> int:
    """How many retries, with this module's backoff, keep trying for about ``seconds``."""
    count, waited = 0, 0.0
    while waited < seconds:
        count += 1
        waited += min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** count)
    return count


def _options(timeout: float | None, retries: int) -> dict[str, Any]:
    options: dict[str, Any] = {"decode_responses": True,
                               "health_check_interval": HEALTH_CHECK_INTERVAL_SECONDS}
    if timeout is not None:
        options |= {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    if retries:
        options |= {
            "retry": Retry(ExponentialBackoff(cap=RETRY_CAP_SECONDS, base=RETRY_BASE_SECONDS),
                           retries),
            # The builtin ConnectionError: a refused connect surfaces as the socket's own error.
            "retry_on_error": [redis.ConnectionError, redis.TimeoutError, ConnectionError],
        }
    return options


def redis_client(url: str, *, timeout: float | None = None,
                 retry_seconds: float = 0.0) -> redis.Redis:
    """A client of the Redis at ``url`` (through its sentinels for ``redis+sentinel://``).

    :param timeout: seconds a connect or a reply may take (None: wait as long as it takes).
    :param retry_seconds: how long a command is retried through a broken connection (a
        failover included: each retry asks the sentinels for the primary again).
    """
    options = _options(timeout, retries_within(retry_seconds))
    if is_sentinel(url):
        from redis.sentinel import Sentinel

        return _primary(Sentinel, url, timeout, options)
    return redis.Redis.from_url(url, **options)


def _primary(sentinel_class: Any, url: str, timeout: float | None,
             options: dict[str, Any]) -> Any:
    """A client of the primary the sentinels of ``url`` name now (and after a failover)."""
    address = parse_sentinel_url(url)
    sentinel_timeout = QUICK_TIMEOUT_SECONDS if timeout is None else timeout
    sentinels = sentinel_class(list(address.sentinels),
                               sentinel_kwargs={"socket_timeout": sentinel_timeout,
                                                "socket_connect_timeout": sentinel_timeout})
    return sentinels.master_for(address.master, db=address.db, username=address.username,
                                password=address.password, **options)


def async_redis_client(url: str, *, timeout: float | None = None) -> Any:
    """A ``redis.asyncio`` client of the Redis at ``url``; it belongs to the running loop."""
    import redis.asyncio as aioredis

    if is_sentinel(url):
        from redis.asyncio.sentinel import Sentinel

        return _primary(Sentinel, url, timeout, _options(timeout, 0))
    return aioredis.Redis.from_url(url, **_options(timeout, 0))
