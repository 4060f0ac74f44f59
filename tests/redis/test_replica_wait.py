"""COMFYQ_REDIS_WAIT_REPLICAS: a submit answers only once the replica has the run's record, so a
failover right after the answer cannot lose it; without it the answer does not wait."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import redis

from comfyq import Client
from comfyq.settings import Settings
from comfyq.webhooks.settings import WebhookSettings
from tests.helpers import request
from tests.sentinel import SentinelGroup, server_binary

#: How long the replica is stopped (SIGSTOP) while a submit is made.
REPLICA_STOPPED_SECONDS = 0.5


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    if server_binary() is None:
        pytest.skip("neither redis-server nor valkey-server is installed")
    with SentinelGroup(tmp_path_factory.mktemp("redis")) as running:
        yield running


def submit_while_replica_stopped(group: SentinelGroup, tmp_path, wait_replicas: int):
    """Submit with the replica stopped for a moment; returns how long the submit took and
    whether the replica had the record at once after it."""
    client = Client(settings=Settings(redis_url=group.url, gpu_types=["A100"], default_gpu="A100",
                                      data_dir=tmp_path, redis_wait_replicas=wait_replicas,
                                      redis_wait_timeout_seconds=5),
                    webhook_settings=WebhookSettings())
    client.submit(request())  # warm: connections, scripts
    replica = group.processes[group.replica_port]
    os.kill(replica.pid, signal.SIGSTOP)
    resume = threading.Timer(REPLICA_STOPPED_SECONDS, os.kill, (replica.pid, signal.SIGCONT))
    resume.start()
    try:
        began = time.monotonic()
        run_id = client.submit(request())
        took = time.monotonic() - began
        # Read the replica's copy the moment it answers again, before it can catch up.
        on_replica = redis.Redis(port=group.replica_port, socket_timeout=5)
        present = bool(on_replica.hexists(f"comfyq:run:{{{run_id}}}", "status"))
    finally:
        resume.join()
    return took, present


def test_a_submit_waits_for_its_replica_when_asked(group, tmp_path):
    took, present = submit_while_replica_stopped(group, tmp_path, wait_replicas=1)
    assert present
    assert took >= REPLICA_STOPPED_SECONDS * 0.8


def test_a_submit_does_not_wait_by_default(group, tmp_path):
    took, _ = submit_while_replica_stopped(group, tmp_path, wait_replicas=0)
    assert took < REPLICA_STOPPED_SECONDS * 0.8
