"""Which workers are up: each keeps ``keys.worker(name)`` alive with a TTL while it runs.

A worker that dies simply disappears after the TTL. Tests, the demo, ``comfyq queues``, the
catalog and the API's readiness check read this instead of asking Celery's remote control,
which needs every worker to answer a broadcast in time. The Celery side (announcing from a
worker's start to its shutdown) is in ``comfyq.workers.presence``.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from comfyq.redis import keys

#: Seconds a worker's presence key lives without a refresh.
PRESENCE_TTL_SECONDS = 15


def announce_presence(client: redis.Redis, description: dict[str, Any]) -> None:
    """Say (again) that the worker ``description["name"]`` is up, as described."""
    pipeline = client.pipeline()
    pipeline.set(keys.worker(description["name"]), json.dumps(description),
                 ex=PRESENCE_TTL_SECONDS)
    pipeline.sadd(keys.WORKERS_INDEX, description["name"])
    pipeline.execute()


def withdraw_presence(client: redis.Redis, name: str) -> None:
    """Say that worker ``name`` is gone."""
    client.delete(keys.worker(name))


def online_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """Every worker whose presence key is alive, sorted by name."""
    names = sorted(client.smembers(keys.WORKERS_INDEX))
    if not names:
        return []
    values = client.mget([keys.worker(name) for name in names])
    return [json.loads(value) for value in values if value]
