"""Fixtures of every tier: the session's own Redis-compatible server, and its databases.

Tests never touch a Redis they did not start: the embedded Valkey starts in milliseconds and
works on a machine with only Python. Tiers: ``tests/unit`` needs no Redis, ``tests/redis`` gets
a database of its own per test (:func:`fresh_redis`), ``tests/e2e`` drives real worker
processes (the session fleet in ``tests/e2e/conftest.py``). ``python -m pytest tests/unit
tests/redis`` runs the fast tiers alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from comfyq.devtools.embedded_redis import start_embedded_redis
from tests.databases import DATABASES, FLEET_DATABASE, DatabasePool


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, so ``-m "not e2e"`` selects the fast tiers."""
    for item in items:
        tier = item.path.parent.name
        if tier in ("unit", "redis", "e2e"):
            item.add_marker(tier)


@pytest.fixture(scope="session", autouse=True)
def default_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What names no data folder writes into the session's temporary folder, never into the
    user's data folder (the default), in this process and the ones it starts."""
    previous = os.environ.get("COMFYQ_DATA_DIR")
    os.environ["COMFYQ_DATA_DIR"] = str(tmp_path_factory.mktemp("default-data"))
    yield
    if previous is None:
        os.environ.pop("COMFYQ_DATA_DIR", None)
    else:
        os.environ["COMFYQ_DATA_DIR"] = previous


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The URL (no database) of the session's own server."""
    server = start_embedded_redis(save="", databases=str(DATABASES))
    try:
        yield server.connection_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_pool(redis_server: str) -> DatabasePool:
    return DatabasePool(redis_server)


@pytest.fixture(scope="session")
def redis_url(redis_server: str) -> str:
    """The session fleet's database."""
    return f"{redis_server}/{FLEET_DATABASE}"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fresh_redis_url(database_pool: DatabasePool) -> Iterator[str]:
    """A database of this test's own, empty, emptied again afterwards."""
    with database_pool.lend() as url:
        yield url


@pytest.fixture
def fresh_redis(fresh_redis_url: str) -> Iterator[redis.Redis]:
    """A client (``decode_responses=True``) of a database of this test's own."""
    client = redis.Redis.from_url(fresh_redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """The ``amqp://`` URL of a vhost of this test's own on the machine's RabbitMQ, deleted with
    everything in it afterwards; the test skips, saying why, where no RabbitMQ answers."""
    from tests.rabbitmq import fresh_vhost, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with fresh_vhost() as url:
        yield url


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    """Each broker in turn: None (the records' Redis is the broker), then RabbitMQ."""
    return None if request.param == "redis" else request.getfixturevalue("rabbitmq_url")


@pytest.fixture
def loopback_inputs_allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The worker's setting that lets input URLs (as webhooks) reach this host's loopback, for
    tests that serve input images or files there."""
    from comfyq.webhooks.settings import reset_webhook_settings

    monkeypatch.setenv("COMFYQ_WEBHOOK_ALLOW_LOOPBACK", "true")
    reset_webhook_settings()
    yield
    monkeypatch.delenv("COMFYQ_WEBHOOK_ALLOW_LOOPBACK")
    reset_webhook_settings()
