"""Benchmark: Redis operations per run, the number that decides when one Redis primary is the
limit (and what a Redis Cluster or WAIT would cost).

Starts its own Valkey and a one-GPU fleet (no beat), lets it idle to learn the background rate
(presence, heartbeats, catalog), then runs ``--runs`` one-node runs one after another (each
waited for) and reads ``INFO commandstats`` before and after: the commands per run, by command,
less the background. With ``--webhook`` each run also has a final webhook to a local receiver
(the outbox's work). ``--wait`` measures what ``WAIT 1 0`` would add to a submit on a primary
with one replica (the replica started here too).

Run: ``python bench/bench_redis_ops.py [--runs 100] [--webhook] [--wait]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.local_deployment import start_deployment
from comfyq.devtools.local_fleet import LocalFleet

GRAPH = {"1": {"class_type": "ComfyDeployOutputText",
               "inputs": {"text": "hi", "filename_prefix": "ops", "file_type": "txt"}}}
#: Seconds of idling that measure the fleet's background commands.
IDLE_SECONDS = 5.0


def command_calls(client) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stats["calls"]
            for name, stats in client.info("commandstats").items()}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after
            if after[name] - before.get(name, 0) and name not in {"info"}}


def measure_wait(url: str, samples: int = 300) -> tuple[float, float]:
    """Median seconds of a record-sized HSET alone and followed by ``WAIT 1 0`` (one replica)."""
    import redis

    from comfyq.devtools.embedded_redis import start_embedded_redis

    primary = redis.Redis.from_url(url)
    replica = start_embedded_redis(save="", replicaof=f"127.0.0.1 {primary.connection_pool.connection_kwargs['port']}")
    try:
        deadline = time.monotonic() + 30
        while primary.info("replication")["connected_slaves"] < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not connect")
            time.sleep(0.1)
        value = "x" * 2000
        plain, waited = [], []
        for i in range(samples):
            start = time.perf_counter()
            primary.hset(f"bench:wait:{i}", "record", value)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            pipeline = primary.pipeline(transaction=False)
            pipeline.hset(f"bench:wait:{i}", "record", value)
            pipeline.execute_command("WAIT", 1, 0)
            pipeline.execute()
            waited.append(time.perf_counter() - start)
        return statistics.median(plain), statistics.median(waited)
    finally:
        replica.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--webhook", action="store_true", help="each run has a final webhook")
    parser.add_argument("--wait", action="store_true", help="also measure WAIT 1 0 per submit")
    args = parser.parse_args()

    deployment = start_deployment(COMFYQ_WEBHOOK_ALLOW_LOOPBACK="true")
    import redis

    from comfyq.devtools.local_receiver import WebhookReceiver
    from comfyq.producer.client import Client

    client = Client()
    plain = redis.Redis.from_url(deployment.url, decode_responses=True)
    try:
        with WebhookReceiver() as receiver, LocalFleet(
                ["A100"], deployment.env, extra_args=["--no-beat"]) as fleet:
            fleet.wait_ready(plain, timeout=90)
            request = {"workflow_id": "ops", "workflow_api_json": GRAPH, "gpu": "A100",
                       **({"webhook": receiver.url} if args.webhook else {})}
            client.wait(client.submit(request), timeout=60)  # warm-up
            time.sleep(1)
            before_idle = command_calls(plain)
            time.sleep(IDLE_SECONDS)
            idle = delta(command_calls(plain), before_idle)
            before = command_calls(plain)
            start = time.monotonic()
            run_ids = [client.wait(client.submit(request), timeout=60).id
                       for _ in range(args.runs)]
            if args.webhook:
                receiver.wait_for(lambda ds: {d.json()["run_id"] for d in ds
                                              if d.json()["status"] == "success"}
                                  >= set(run_ids), 60)
            elapsed = time.monotonic() - start
            busy = delta(command_calls(plain), before)
        wait_costs = measure_wait(deployment.url) if args.wait else None
    finally:
        deployment.stop()

    scale = elapsed / IDLE_SECONDS
    per_run = {name: (calls - idle.get(name, 0) * scale) / args.runs
               for name, calls in busy.items()}
    per_run = {name: value for name, value in per_run.items() if value >= 0.05}
    total = sum(per_run.values())
    print(f"{args.runs} one-node runs{' with a final webhook' if args.webhook else ''}, "
          f"{elapsed:.1f} s; background {sum(idle.values()) / IDLE_SECONDS:.1f} commands/s "
          f"subtracted")
    print(f"Redis commands per run: {total:.1f}")
    for name, value in sorted(per_run.items(), key=lambda item: -item[1]):
        print(f"  {name:24} {value:6.2f}")
    if wait_costs:
        plain_s, waited_s = wait_costs
        print(f"HSET of a 2 KB record: median {plain_s * 1e3:.3f} ms; with WAIT 1 0 (one "
              f"replica, loopback): {waited_s * 1e3:.3f} ms (+{(waited_s - plain_s) * 1e3:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
