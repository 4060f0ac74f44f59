"""A Client uses the settings it was given for everything a submit triggers: the Redis of its
records, the broker it publishes to, the webhook rules and the outbox of its events. Two clients
with different settings work side by side in one process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from comfyq import Client, InvalidRunRequest
from comfyq.broker import CALLBACKS_QUEUE, gpu_queue
from comfyq.broker.messages import message_run_ids
from comfyq.broker.redis_transport import queue_lists
from comfyq.redis import keys
from comfyq.settings import Settings
from comfyq.webhooks.settings import WebhookSettings
from tests.helpers import request

HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
def two_databases(database_pool) -> Iterator[tuple[str, str]]:
    with database_pool.lend() as first, database_pool.lend() as second:
        yield first, second


def client_on(url: str, gpu: str, tmp_path, allow_loopback: bool) -> Client:
    settings = Settings(redis_url=url, gpu_types=[gpu], default_gpu=gpu, data_dir=tmp_path)
    return Client(settings=settings,
                  webhook_settings=WebhookSettings(webhook_allow_loopback=allow_loopback))


def queued_run_ids(url: str, queue: str) -> list[str]:
    with redis.Redis.from_url(url, decode_responses=True) as plain:
        return [run_id for name in queue_lists(queue)
                for run_id in message_run_ids(plain.lrange(name, 0, -1))]


def test_two_clients_with_their_own_settings_side_by_side(two_databases, tmp_path) -> None:
    first_url, second_url = two_databases
    first = client_on(first_url, "A100", tmp_path / "a", allow_loopback=True)
    second = client_on(second_url, "T4", tmp_path / "b", allow_loopback=False)

    hooked = first.submit(request(gpu="A100", webhook=HOOK, webhook_intermediate_status=True))
    with pytest.raises(InvalidRunRequest, match="webhook"):
        second.submit(request(gpu="T4", webhook=HOOK))
    plain = second.submit(request(gpu="T4"))

    # Each run is recorded, and its message published, where its own client's settings say.
    assert first.get_run(hooked).gpu == "A100" and second.get_run(plain).gpu == "T4"
    assert queued_run_ids(first_url, gpu_queue("A100")) == [hooked]
    assert queued_run_ids(second_url, gpu_queue("T4")) == [plain]
    assert queued_run_ids(second_url, gpu_queue("A100")) == []
    # The queued-status webhook event sits in the first client's outbox, and its delivery was
    # handed to the callback queue of the first client's broker only.
    assert first.redis.zcard(keys.WEBHOOKS_OUTSTANDING) == 1
    assert second.redis.zcard(keys.WEBHOOKS_OUTSTANDING) == 0
    with redis.Redis.from_url(first_url) as records:
        assert records.llen(CALLBACKS_QUEUE) == 1
    with redis.Redis.from_url(second_url) as records:
        assert records.llen(CALLBACKS_QUEUE) == 0
