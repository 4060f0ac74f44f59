"""Flower, started against comfyq's own Celery configuration, shows runs by task name and run id."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import requests

from tests.helpers import request
from tests.ops_helpers import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        return requests.get(url, auth=("ops", "secret"), timeout=2).ok
    except requests.ConnectionError:
        return False


@pytest.fixture
def flower(fleet_settings, redis_client, tmp_path):
    env, _ = fleet_settings
    port = free_port()
    # Flower follows task events with a pattern subscription (kombu's Redis fanout); nothing
    # else in the session subscribes to patterns.
    patterns_before = redis_client.pubsub_numpat()
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "comfyq.tasks.app", "flower", f"--port={port}",
         "--address=127.0.0.1", "--basic-auth=ops:secret"],
        env={**os.environ, **env}, stdout=open(tmp_path / "flower.log", "wb"),
        stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{base}/api/workers"), timeout=60, interval=0.3,
                   describe=lambda: (tmp_path / "flower.log").read_text()[-2000:])
        # Its event consumer attached before the run is sent, or it would miss the run.
        wait_until(lambda: redis_client.pubsub_numpat() > patterns_before, timeout=30)
    except AssertionError:
        process.kill()
        raise
    yield base
    process.terminate()
    process.wait(timeout=20)


def test_flower_lists_runs_by_task_name_and_run_id(client, flower):
    assert requests.get(f"{flower}/api/tasks", timeout=5).status_code == 401
    run_id = client.submit(request(gpu="A100"))
    assert client.wait(run_id, timeout=60).status.value == "success"

    def finished_task() -> dict | None:
        tasks = requests.get(f"{flower}/api/tasks", auth=("ops", "secret"), timeout=5).json()
        task = tasks.get(run_id)
        return task if task and task.get("state") == "SUCCESS" else None

    task = wait_until(finished_task, timeout=20, interval=0.3)
    assert task["name"] == "comfyq.execute_run"
    assert run_id in task["args"]
    assert task["state"] == "SUCCESS" and task["result"] == "'success'"
    assert task["worker"].startswith("gpu0@")
