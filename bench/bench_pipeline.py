"""Benchmark: comfyq's submit and end-to-end latency, side by side with plain Celery, in one run.

The plain-Celery side (``bench.bare_celery_app``) has comfyq's own Celery configuration: no
result backend for submits, the same serializer, broker options and event settings.

(a) Submit throughput: ``comfyq.Client.submit`` (validate + record + enqueue) and
    ``Client.submit_many`` (batches of ``--batch`` requests) vs. a loop of plain ``send_task``
    of the same request payload to the same broker and queue, in rounds whose first side
    alternates; the medians of the rounds are reported. Targets: submit >= 1.0x, submit_many
    >= 5x.
(b) End-to-end latency of a one-node run (submit -> worker -> success -> ``wait`` returns) vs. a
    bare Celery task round trip (``apply_async(...).get()``, results in Redis as comfyq's are in
    its run record), each with one prefork worker of concurrency 1, one of each in turn with
    the first side alternating, so both see the same machine. Target: comfyq p50 and p99 <=
    1.5x the bare ones.

Run: ``python bench/bench_pipeline.py [--submits 4000] [--rounds 10] [--batch 100]
[--runs 200]``. It starts
its own Valkey and workers, and prints the numbers and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.local_deployment import BARE_QUEUE, start_deployment
from bench.measuring import in_turns, percentile
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
#: Pause before each latency sample, so the previous sample's tail work does not overlap it.
SETTLE_SECONDS = 0.02


def submit_rates(client, publisher, count: int, rounds: int,
                 batch: int) -> dict[str, list[float]]:
    """Submits per second of each round: comfyq one by one, comfyq in batches of ``batch``, and
    a loop of plain send_task."""
    payload = {"workflow_id": "bench", "workflow_api_json": SUBMIT_GRAPH, "gpu": "A100",
               "inputs": {"seed": 1}}
    per_round = max(batch, count // rounds // batch * batch)

    def rate(submit: Callable[[], object], per_call: int = 1) -> Callable[[], float]:
        def measure() -> float:
            start = time.perf_counter()
            for _ in range(per_round // per_call):
                submit()
            return per_round / (time.perf_counter() - start)
        return measure

    def submit_batch() -> None:
        outcomes = client.submit_many([payload] * batch)
        assert all(outcome.run_id for outcome in outcomes), outcomes[0].error

    sides = {
        "comfyq": rate(lambda: client.submit(payload)),
        "comfyq batch": rate(submit_batch, batch),
        # As comfyq publishes a run: to its GPU type's queue, retried through broker hiccups.
        "plain": rate(lambda: publisher.send_task(
            "bench.execute", args=[payload], queue="comfyq.gpu.A100", retry=True,
            retry_policy=client.broker.retry_policy)),
    }
    for measure in sides.values():  # warm-up: connections, Lua scripts, imports
        measure()
    return in_turns(sides, rounds)


def one_comfyq_run(client) -> float:
    request = {"workflow_id": "bench", "workflow_api_json": ONE_NODE_GRAPH, "gpu": "A100"}
    start = time.perf_counter()
    run = client.wait(client.submit(request), timeout=30)
    elapsed = time.perf_counter() - start
    assert run.status.value == "success", run.error
    return elapsed


def one_bare_round_trip(results_app) -> float:
    start = time.perf_counter()
    results_app.send_task("bench.echo", args=["hello"], queue=BARE_QUEUE).get(timeout=30)
    return time.perf_counter() - start


def settled(measure: Callable[[], float]) -> Callable[[], float]:
    """``measure`` after a short pause, so the previous sample's tail work (its ack, its
    events) does not overlap it."""
    def after_pause() -> float:
        time.sleep(SETTLE_SECONDS)
        return measure()
    return after_pause


def latencies(deployment, client, results_app, runs: int) -> dict[str, list[float]]:
    """End-to-end seconds of ``runs`` bare Celery round trips and comfyq one-node runs."""
    bare_worker = deployment.plain_worker("bare")
    try:
        with LocalFleet(["A100"], deployment.env,
                        extra_args=["--no-beat", "--no-callbacks"]) as fleet:
            fleet.wait_ready(redis.Redis.from_url(deployment.url, decode_responses=True),
                             timeout=60, callbacks=False)
            results_app.send_task("bench.echo", args=["warm"], queue=BARE_QUEUE).get(timeout=60)
            for _ in range(5):  # warm the worker's imports and caches
                one_comfyq_run(client)
            return in_turns({"bare": settled(lambda: one_bare_round_trip(results_app)),
                             "comfyq": settled(lambda: one_comfyq_run(client))}, runs)
    finally:
        bare_worker.terminate()
        bare_worker.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=4000, help="per side, over all rounds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100, help="requests per submit_many call")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    deployment = start_deployment()
    from bench.bare_celery_app import app as publisher
    from bench.bare_celery_app import results_app
    from comfyq.producer.client import Client

    client = Client()
    try:
        rates = submit_rates(client, publisher, args.submits, args.rounds, args.batch)
        # Drop the submitted runs and messages from the benchmark's own Valkey before workers
        # start, so they do not execute them.
        deployment.empty()
        samples = latencies(deployment, client, results_app, args.runs)
    finally:
        deployment.stop()

    print(f"submit throughput, median of {args.rounds} rounds (first side alternating):")
    plain = statistics.median(rates["plain"])
    print(f"  plain send_task loop: {plain:,.0f}/s")
    for side, target in (("comfyq", 1.0), ("comfyq batch", 5.0)):
        ours = statistics.median(rates[side])
        round_ratios = [c / p for c, p in zip(rates[side], rates["plain"], strict=True)]
        print(f"  {side:>20}: {ours:,.0f}/s, ratio {ours / plain:.2f} (per-round ratios: "
              f"median {statistics.median(round_ratios):.2f}, "
              f"{min(round_ratios):.2f}-{max(round_ratios):.2f}; target >= {target:.1f})")
    bare, mine = samples["bare"], samples["comfyq"]
    for name, values in (("bare Celery round trip", bare), ("comfyq one-node run", mine)):
        print(f"{name:>24}: p50 {percentile(values, 0.5) * 1000:.2f} ms, "
              f"p99 {percentile(values, 0.99) * 1000:.2f} ms, "
              f"mean {statistics.fmean(values) * 1000:.2f} ms")
    ratio = percentile(mine, 0.5) / percentile(bare, 0.5)
    print(f"end-to-end p50 ratio comfyq/bare: {ratio:.2f}, "
          f"p99 ratio {percentile(mine, 0.99) / percentile(bare, 0.99):.2f} (targets <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
