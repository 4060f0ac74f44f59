"""Fixtures of the Redis tier: clients on the test's own database whose store reads a clock the
test moves forward."""

from __future__ import annotations

import pytest

from comfyq import Client
from comfyq.settings import Settings
from comfyq.webhooks.settings import WebhookSettings
from tests.redis.moving_time import MovableClock


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def make_client(fresh_redis_url, tmp_path, clock):
    def build(**overrides) -> Client:
        settings = Settings(redis_url=fresh_redis_url, gpu_types=["A100"], default_gpu="A100",
                            data_dir=tmp_path, **overrides)
        client = Client(settings=settings,
                        webhook_settings=WebhookSettings(webhook_allow_loopback=True))
        client.store.clock = clock
        return client
    return build
