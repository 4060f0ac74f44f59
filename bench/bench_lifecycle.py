"""Benchmark: what the safety costs. Short runs per second through comfyq (lease, heartbeat, run
record, claim, fenced writes) vs. plain Celery tasks doing the same graph work, with 1, 2 and 8
simulated GPU workers a side draining the same number of short runs, in one run on one machine.
Target: comfyq at most 25% fewer runs/s.

The plain side (``bench.bare_celery_app``) has comfyq's Celery configuration (same serializer,
broker options and task events), with a Redis result backend standing in for comfyq's run
record. Both sides' workers run the whole time; rounds alternate which side goes first, and the
medians of the rounds are reported.

Run: ``python bench/bench_lifecycle.py [--runs 2000] [--rounds 5] [--workers 1,2,8]``. Starts its
own Valkey and workers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.local_deployment import BARE_QUEUE, BenchDeployment, start_deployment
from bench.measuring import in_turns
from comfyq.devtools.local_fleet import LocalFleet

#: A short run: a small image made, inverted and saved (real file output).
SHORT_GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                  "color": 255}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "b"}},
}


def plain_rate(results_app, runs: int) -> float:
    start = time.perf_counter()
    results = [results_app.send_task("bench.execute_graph", args=[SHORT_GRAPH], queue=BARE_QUEUE)
               for _ in range(runs)]
    for result in results:
        result.get(timeout=120)
    return runs / (time.perf_counter() - start)


def comfyq_rate(client, runs: int) -> float:
    request = {"workflow_id": "bench", "workflow_api_json": SHORT_GRAPH, "gpu": "A100"}
    start = time.perf_counter()
    run_ids = [client.submit(request) for _ in range(runs)]
    for run_id in run_ids:
        assert client.wait(run_id, timeout=120).status.value == "success"
    return runs / (time.perf_counter() - start)


def rates(deployment: BenchDeployment, client, results_app, workers: int, runs: int,
          rounds: int) -> dict[str, list[float]]:
    """Runs per second of each round, plain and comfyq, with ``workers`` workers a side."""
    plain_workers = [deployment.plain_worker(f"plain{index}") for index in range(workers)]
    try:
        with LocalFleet(["A100"] * workers, deployment.env,
                        extra_args=["--no-beat", "--no-callbacks"]) as fleet:
            fleet.wait_ready(redis.Redis.from_url(deployment.url, decode_responses=True),
                             timeout=90, callbacks=False)
            per_round = max(1, runs // rounds)
            sides = {"plain": lambda: plain_rate(results_app, per_round),
                     "comfyq": lambda: comfyq_rate(client, per_round)}
            for measure in sides.values():  # warm-up: imports, caches, connections
                measure()
            return in_turns(sides, rounds)
    finally:
        for process in plain_workers:
            process.terminate()
        for process in plain_workers:
            process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="per side, over all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="1,2,8",
                        help="comma-separated worker counts a side (default: 1,2,8)")
    args = parser.parse_args()
    worker_counts = [int(count) for count in args.workers.split(",")]
    deployment = start_deployment()
    from bench.bare_celery_app import results_app
    from comfyq.producer.client import Client

    client = Client()
    rows = []
    try:
        for workers in worker_counts:
            measured = rates(deployment, client, results_app, workers, args.runs, args.rounds)
            rows.append((workers, statistics.median(measured["plain"]),
                         statistics.median(measured["comfyq"])))
    finally:
        deployment.stop()
    for workers, bare, ours in rows:
        print(f"{workers} worker(s), median of {args.rounds} rounds: plain Celery {bare:6.1f} "
              f"runs/s, comfyq {ours:6.1f} runs/s, comfyq/plain {ours / bare:.2f} "
              f"({(1 - ours / bare) * 100:+.0f}% fewer; target <= 25% fewer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
