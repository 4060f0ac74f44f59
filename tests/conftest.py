"""Shared fixtures: a throwaway Redis for the whole test session.

Tests never touch a Redis they did not start, unless ``COMFYQ_TEST_REDIS_URL`` points at one:
the embedded Valkey starts in milliseconds and works on a machine with only Python.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from comfyq.embedded_redis import start_embedded_redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    given = os.environ.get("COMFYQ_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = start_embedded_redis(save="")
    try:
        yield f"{server.connection_url}/0"
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()
