"""Benchmark: from a run's end to its final webhook at the receiver, through real processes.

A real ``comfyq worker`` (one simulated GPU, the callback worker, beat) runs short runs one after
another (light load); a local receiver notes when each final webhook arrives. The latency is the
receipt time minus the run record's ``ended_at``. Target: p50 under 20 ms.

Run: ``python bench/bench_webhook_latency.py [--runs 100]``. Starts its own Valkey and workers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.local_deployment import start_deployment
from comfyq.devtools.local_fleet import LocalFleet
from comfyq.devtools.local_receiver import WebhookReceiver

GRAPH = {"1": {"class_type": "ComfyDeployOutputText",
               "inputs": {"text": "hello", "filename_prefix": "hook", "file_type": "txt"}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    deployment = start_deployment(COMFYQ_WEBHOOK_ALLOW_LOOPBACK="true")
    server, url, env = deployment.server, deployment.url, deployment.env
    from comfyq.producer.client import Client

    client = Client()
    latencies = []
    try:
        with WebhookReceiver() as receiver, LocalFleet(["A100"], env) as fleet:
            fleet.wait_ready(redis.Redis.from_url(url, decode_responses=True), timeout=90)
            request = {"workflow_id": "bench", "workflow_api_json": GRAPH, "gpu": "A100",
                       "webhook": receiver.url}
            for index in range(args.runs + 5):
                run = client.wait(client.submit(request), timeout=30)
                assert receiver.wait_for(lambda ds, n=index: len(ds) == n + 1, timeout=30)
                if index >= 5:  # the first few warm the workers up
                    latencies.append(receiver.accepted()[-1].received_at
                                     - run.ended_at.timestamp())
    finally:
        server.stop()
    ordered = sorted(latencies)
    p50, p99 = statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]
    print(f"run end -> final webhook received, {len(ordered)} runs: p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, mean {statistics.fmean(ordered) * 1000:.1f} ms "
          f"(target p50 < 20 ms: {'meets' if p50 < 0.020 else 'misses'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
