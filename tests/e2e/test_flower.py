"""Flower, started against comfyq's own Celery configuration, shows runs by task name and run id."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.helpers import request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def flower(fleet_settings, tmp_path):
    env, _ = fleet_settings
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "comfyq.tasks.app", "flower", f"--port={port}",
         "--address=127.0.0.1", "--basic-auth=ops:secret"],
        env={**os.environ, **env}, stdout=open(tmp_path / "flower.log", "wb"),
        stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/api/workers", auth=("ops", "secret"), timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail((tmp_path / "flower.log").read_text()[-2000:])
    time.sleep(1.0)  # let Flower's event consumer attach before the run is sent
    yield base
    process.terminate()
    process.wait(timeout=20)


def test_flower_lists_runs_by_task_name_and_run_id(client, flower):
    assert requests.get(f"{flower}/api/tasks", timeout=5).status_code == 401
    run_id = client.submit(request(gpu="A100"))
    assert client.wait(run_id, timeout=60).status.value == "success"
    deadline = time.monotonic() + 20
    task = None
    while time.monotonic() < deadline and not (task and task.get("state") == "SUCCESS"):
        tasks = requests.get(f"{flower}/api/tasks", auth=("ops", "secret"), timeout=5).json()
        task = tasks.get(run_id)
        time.sleep(0.3)
    assert task is not None, "Flower never saw the run's task"
    assert task["name"] == "comfyq.execute_run"
    assert run_id in task["args"]
    assert task["state"] == "SUCCESS" and task["result"] == "'success'"
    assert task["worker"].startswith("gpu0@")
