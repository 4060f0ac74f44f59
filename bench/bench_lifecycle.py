"""Benchmark: what the safety costs. Short runs per second through comfyq (lease, heartbeat, run
record, claim, fenced writes) vs. plain Celery tasks doing the same graph work, with 1 and 2
simulated GPU workers, in one run on one machine. Target: comfyq at most 25% fewer runs/s.

Run: ``python bench/bench_lifecycle.py [--runs 300]``. Starts its own Valkey and workers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.local_deployment import start_deployment
from comfyq.devtools.local_fleet import LocalFleet

#: A short run: a small image made, inverted and saved (real file output).
SHORT_GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                  "color": 255}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "b"}},
}


def plain_rate(app, workers: int, runs: int) -> float:
    processes = [subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.bare_celery_app", "worker", "-Q",
         "bench.bare", "-c", "1", "-P", "prefork", "-n", f"plain{index}@%h", "--without-mingle",
         # Task events on, as comfyq's workers have them for Flower: the difference measured
         # is the safety (record, claim, lease, heartbeat), not the monitoring.
         "--without-gossip", "--task-events", "-l", "warning"], cwd=str(REPO),
        env={**os.environ})
        for index in range(workers)]
    try:
        warm = [app.send_task("bench.execute_graph", args=[SHORT_GRAPH], queue="bench.bare")
                for _ in range(workers * 4)]
        for result in warm:
            result.get(timeout=60)
        start = time.perf_counter()
        results = [app.send_task("bench.execute_graph", args=[SHORT_GRAPH], queue="bench.bare")
                   for _ in range(runs)]
        for result in results:
            result.get(timeout=120)
        return runs / (time.perf_counter() - start)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()


def comfyq_rate(client, env: dict, plain: redis.Redis, workers: int, runs: int) -> float:
    request = {"workflow_id": "bench", "workflow_api_json": SHORT_GRAPH, "gpu": "A100"}
    with LocalFleet(["A100"] * workers, env, extra_args=["--no-beat", "--no-callbacks"]) as fleet:
        fleet.wait_ready(plain, timeout=90, callbacks=False)
        for run_id in [client.submit(request) for _ in range(workers * 4)]:
            client.wait(run_id, timeout=60)
        start = time.perf_counter()
        run_ids = [client.submit(request) for _ in range(runs)]
        for run_id in run_ids:
            assert client.wait(run_id, timeout=120).status.value == "success"
        return runs / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    deployment = start_deployment()
    server, url, env = deployment.server, deployment.url, deployment.env
    import importlib

    from comfyq.producer.client import Client

    app = importlib.import_module("bench.bare_celery_app").app
    client = Client()
    plain = redis.Redis.from_url(url, decode_responses=True)
    rows = []
    try:
        for workers in (1, 2):
            rows.append((workers, plain_rate(app, workers, args.runs),
                         comfyq_rate(client, env, plain, workers, args.runs)))
    finally:
        server.stop()
    for workers, bare, ours in rows:
        print(f"{workers} worker(s): plain Celery {bare:6.1f} runs/s, comfyq {ours:6.1f} runs/s, "
              f"comfyq/plain {ours / bare:.2f} ({(1 - ours / bare) * 100:+.0f}% fewer; "
              f"target <= 25% fewer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
