"""Benchmark: RabbitMQ vs Redis as comfyq's broker, each side by side with plain Celery on it.

For each broker (the run records stay in Redis either way):

(a) Submit throughput: ``comfyq.Client.submit`` (validate + record + publish; with publisher
    confirms on RabbitMQ) vs. a loop of plain ``send_task`` of the same payload to the same
    broker and queue, in rounds whose first side alternates; medians of the rounds.
(b) End-to-end latency of a one-node run (submit -> worker -> success -> ``wait`` returns) vs. a
    bare Celery round trip (``apply_async(...).get()``, results in Redis as comfyq's are in its
    record), one prefork worker of concurrency 1 each, one of each in turn.

Redis is a Valkey the benchmark starts. RabbitMQ is the one at 127.0.0.1:5672 (guest/guest),
in a vhost the benchmark creates with ``rabbitmqctl`` and deletes after; its side is skipped,
saying why, where none answers.

Run: ``python bench/bench_brokers.py [--submits 1000] [--rounds 4] [--runs 40]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_pipeline import one_comfyq_run, settled
from bench.local_deployment import BARE_QUEUE, BenchDeployment, start_deployment
from bench.measuring import in_turns, percentile
from comfyq.devtools.local_fleet import LocalFleet

PAYLOAD = {"workflow_id": "bench", "gpu": "A100", "workflow_api_json": {
    "1": {"class_type": "ComfyDeployOutputText",
          "inputs": {"text": "hello", "filename_prefix": "greeting", "file_type": "txt"}}}}


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str | None]:
    """A vhost of the benchmark's own on the local RabbitMQ (None, said why, when there is none)."""
    from tests.rabbitmq import fresh_vhost, unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"RabbitMQ side skipped: {reason}")
        yield None
        return
    with fresh_vhost() as url:
        yield url


def use_broker(deployment: BenchDeployment, broker_url: str | None):
    """Point this process (and workers started after) at ``broker_url``; a client and the plain
    apps for it."""
    from comfyq.settings import reset_settings

    for name in ("COMFYQ_BROKER_URL", "BENCH_BROKER_URL"):
        if broker_url:
            deployment.env[name] = os.environ[name] = broker_url
        else:
            deployment.env.pop(name, None)
            os.environ.pop(name, None)
    reset_settings()
    from bench.bare_celery_app import plain_celery_app
    from comfyq.producer.client import Client

    return Client(), plain_celery_app(results=False), plain_celery_app(results=True)


def submit_rates(client, publisher, count: int, rounds: int) -> dict[str, list[float]]:
    per_round = max(1, count // rounds)

    def rate(submit: Callable[[], object]) -> Callable[[], float]:
        def measure() -> float:
            start = time.perf_counter()
            for _ in range(per_round):
                submit()
            return per_round / (time.perf_counter() - start)
        return measure

    sides = {"comfyq": rate(lambda: client.submit(PAYLOAD)),
             "plain": rate(lambda: publisher.send_task(
                 "bench.execute", args=[PAYLOAD], queue="comfyq.gpu.A100", retry=True,
                 retry_policy=client.broker.retry_policy))}
    for measure in sides.values():  # warm-up: connections, declarations, Lua scripts
        measure()
    return in_turns(sides, rounds)


def purge_gpu_queue(client) -> None:
    """Drop the submitted runs' messages, so the workers started next do not execute them."""
    if client.broker.is_amqp:
        from kombu import Connection

        with Connection(client.settings.effective_broker_url) as connection:
            connection.default_channel.queue_purge("comfyq.gpu.A100")


def latencies(deployment: BenchDeployment, client, results_app, runs: int):
    def bare() -> float:
        start = time.perf_counter()
        results_app.send_task("bench.echo", args=["hello"], queue=BARE_QUEUE).get(timeout=30)
        return time.perf_counter() - start

    bare_worker = deployment.plain_worker("bare")
    try:
        with LocalFleet(["A100"], deployment.env,
                        extra_args=["--no-beat", "--no-callbacks"]) as fleet:
            from comfyq.redis.connection import redis_client

            fleet.wait_ready(redis_client(deployment.url), timeout=90, callbacks=False)
            results_app.send_task("bench.echo", args=["warm"], queue=BARE_QUEUE).get(timeout=60)
            for _ in range(3):
                one_comfyq_run(client)
            return in_turns({"bare": settled(bare), "comfyq": settled(
                lambda: one_comfyq_run(client))}, runs)
    finally:
        bare_worker.terminate()
        bare_worker.wait()


def measure(deployment: BenchDeployment, broker_url: str | None, args) -> dict[str, float]:
    client, publisher, results_app = use_broker(deployment, broker_url)
    rates = submit_rates(client, publisher, args.submits, args.rounds)
    purge_gpu_queue(client)
    deployment.empty()
    samples = latencies(deployment, client, results_app, args.runs)
    deployment.empty()
    return {"comfyq submit/s": statistics.median(rates["comfyq"]),
            "plain submit/s": statistics.median(rates["plain"]),
            "comfyq p50 ms": percentile(samples["comfyq"], 0.5) * 1000,
            "bare p50 ms": percentile(samples["bare"], 0.5) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=1000, help="per side and broker")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=40, help="latency samples per side")
    args = parser.parse_args()

    deployment = start_deployment()
    results: dict[str, dict[str, float]] = {}
    try:
        results["redis"] = measure(deployment, None, args)
        with rabbitmq_vhost() as amqp_url:
            if amqp_url:
                results["rabbitmq"] = measure(deployment, amqp_url, args)
    finally:
        deployment.stop()

    print(f"{'broker':10} {'comfyq submit/s':>16} {'plain submit/s':>15} {'ratio':>6} "
          f"{'comfyq p50 ms':>14} {'bare p50 ms':>12} {'ratio':>6}")
    for broker, r in results.items():
        print(f"{broker:10} {r['comfyq submit/s']:16,.0f} {r['plain submit/s']:15,.0f} "
              f"{r['comfyq submit/s'] / r['plain submit/s']:6.2f} {r['comfyq p50 ms']:14.2f} "
              f"{r['bare p50 ms']:12.2f} {r['comfyq p50 ms'] / r['bare p50 ms']:6.2f}")
    if len(results) == 2:
        redis_side, rabbit = results["redis"], results["rabbitmq"]
        print(f"RabbitMQ/Redis: comfyq submit/s {rabbit['comfyq submit/s'] / redis_side['comfyq submit/s']:.2f}, "
              f"plain submit/s {rabbit['plain submit/s'] / redis_side['plain submit/s']:.2f}, "
              f"comfyq p50 {rabbit['comfyq p50 ms'] / redis_side['comfyq p50 ms']:.2f}, "
              f"bare p50 {rabbit['bare p50 ms'] / redis_side['bare p50 ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
