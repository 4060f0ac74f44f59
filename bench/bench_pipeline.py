"""Benchmark: comfyq's submit and end-to-end latency, side by side with plain Celery, in one run.

(a) Submit throughput: ``comfyq.Client.submit`` (validate + record + enqueue) vs. a plain
    ``send_task`` of the same request payload to the same broker. Target: comfyq >= 0.7x.
(b) End-to-end latency of a one-node run (submit -> worker -> success -> ``wait`` returns) vs. a
    bare Celery task round trip (``apply_async(...).get()`` with a Redis result backend), each
    with one prefork worker of concurrency 1, measured alternately (one of each in turn) so
    both see the same machine. Target: comfyq p50 <= 3x the bare p50.

Run: ``python bench/bench_pipeline.py [--submits 2000] [--runs 200]``. It starts its own Valkey
and workers, and prints the numbers and the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.local_deployment import start_deployment
from comfyq.devtools.local_fleet import LocalFleet

#: The one-node run: an output node fed only by literals.
ONE_NODE_GRAPH = {"1": {"class_type": "ComfyDeployOutputText",
                        "inputs": {"text": "hello", "filename_prefix": "greeting",
                                   "file_type": "txt"}}}
SUBMIT_GRAPH = {
    "1": {"class_type": "EmptyImage",
          "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "b"}},
}
BARE_APP_MODULE = "bench.bare_celery_app"
#: Pause before each latency sample, so the previous sample's tail work does not overlap it.
SETTLE_SECONDS = 0.02


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def bench_submit(client, bare_app, count: int, rounds: int = 5) -> tuple[float, float]:
    """Submits per second for comfyq and for plain send_task, interleaved in rounds."""
    payload = {"workflow_id": "bench", "workflow_api_json": SUBMIT_GRAPH, "gpu": "A100",
               "inputs": {"seed": 1}}
    comfyq_time = plain_time = 0.0
    per_round = count // rounds
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            client.submit(payload)
        comfyq_time += time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(per_round):
            bare_app.send_task("bench.execute", args=[payload], queue="comfyq.gpu.A100")
        plain_time += time.perf_counter() - start
    return per_round * rounds / comfyq_time, per_round * rounds / plain_time


def bench_comfyq_latency(client, count: int) -> list[float]:
    request = {"workflow_id": "bench", "workflow_api_json": ONE_NODE_GRAPH, "gpu": "A100"}
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        run = client.wait(client.submit(request), timeout=30)
        samples.append(time.perf_counter() - start)
        assert run.status.value == "success", run.error
    return samples


def bench_bare_latency(bare_app, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        bare_app.send_task("bench.echo", args=["hello"], queue="bench.bare").get(timeout=30)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    deployment = start_deployment()
    server, url, env = deployment.server, deployment.url, deployment.env
    import importlib

    from comfyq.producer.client import Client

    bare_app = importlib.import_module(BARE_APP_MODULE).app
    client = Client()
    plain_redis = redis.Redis.from_url(url, decode_responses=True)
    try:
        comfyq_rate, plain_rate = bench_submit(client, bare_app, args.submits)
        plain_redis.flushdb()
        bare_worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", BARE_APP_MODULE, "worker", "-Q", "bench.bare",
             "-c", "1", "-P", "prefork", "--without-mingle", "--without-gossip", "-l", "warning"],
            env={**os.environ}, cwd=str(REPO))
        try:
            with LocalFleet(["A100"], env, extra_args=["--no-beat", "--no-callbacks"]) as fleet:
                fleet.wait_ready(plain_redis, timeout=60, callbacks=False)
                bare_app.send_task("bench.echo", args=["warm"], queue="bench.bare").get(timeout=60)
                bench_comfyq_latency(client, 5)  # warm the worker's imports and caches
                # Alternate one of each, so both see the same machine at the same moment; the
                # pause lets the other worker finish its ack and events before the next sample.
                bare, ours = [], []
                for _ in range(args.runs):
                    time.sleep(SETTLE_SECONDS)
                    bare += bench_bare_latency(bare_app, 1)
                    time.sleep(SETTLE_SECONDS)
                    ours += bench_comfyq_latency(client, 1)
        finally:
            bare_worker.terminate()
            bare_worker.wait()
    finally:
        server.stop()

    print(f"submit throughput: comfyq {comfyq_rate:,.0f}/s, plain send_task {plain_rate:,.0f}/s, "
          f"ratio {comfyq_rate / plain_rate:.2f} (target >= 0.70)")
    for name, samples in (("bare Celery round trip", bare), ("comfyq one-node run", ours)):
        print(f"{name:>24}: p50 {percentile(samples, 0.5) * 1000:.2f} ms, "
              f"p99 {percentile(samples, 0.99) * 1000:.2f} ms, "
              f"mean {statistics.fmean(samples) * 1000:.2f} ms")
    ratio = percentile(ours, 0.5) / percentile(bare, 0.5)
    print(f"end-to-end p50 ratio comfyq/bare: {ratio:.2f} (target <= 3.0); "
          f"p99 ratio {percentile(ours, 0.99) / percentile(bare, 0.99):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
