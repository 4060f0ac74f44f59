"""Benchmark: do the read paths stay fast when Redis keeps many finished runs?

Two databases of one embedded Valkey are filled through comfyq's own code: one retains 1,000
finished runs, the other ``--runs`` (100,000 by default); each also holds ``--queued`` runs
(1,000) submitted with ``Client.submit`` and spread over every GPU type's queue. Finished runs
are recorded as the producer records them and finished as a worker finishes them (claim, then
the final move with the lease), so each record carries its graph, outputs and retention TTL.

Then, turn about on the two databases, each operation is timed ``--repeat`` times (median):

- a Prometheus scrape: the exporter's registry (``ComfyqCollector``) rendered as text;
- ``comfyq runs --limit 50``: ``list_runs(limit=50)``;
- ``comfyq queues``: ``queue_states`` with a ``Broker``;
- the run pages' list (``/ui/fragments/runs``): ``list_runs`` and its table rendered;
- one reaper pass: ``reap_runs`` and ``recover_lost_messages``, with the reaper's clock past
  ``lost_message_seconds`` so every queued run is a suspect it must find in its queue (the
  steady state of a long queue; nothing is re-published, so the pass leaves the data alone).

Target: each under 100 ms at the large count and within 1.5x of the same at 1,000.
Finally Redis memory per retained run and per queued run (``INFO memory`` before and after a
fill, and ``MEMORY USAGE`` of one record) for a small graph and the SD 1.5 graph.

Run: ``python bench/bench_scale.py`` (about 100,000 runs: a few minutes to fill), or
``python bench/bench_scale.py --runs 20000`` for a quicker look. ``--profile`` prints where
the time of each operation goes (cProfile, and the Valkey's command statistics).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402

from bench.measuring import in_turns  # noqa: E402
from comfyq.devtools.embedded_redis import start_embedded_redis  # noqa: E402

SD15_GRAPH = REPO / "tests" / "data" / "reference" / "workflows" / "sd15-txt2img.api.json"
#: The small graph of the tests (``tests.helpers.invert_graph``), as a producer would send it.
SMALL_GRAPH: dict[str, Any] = {
    "10": {"class_type": "ComfyUIDeployExternalNumberInt",
           "inputs": {"input_id": "width", "default_value": 8}},
    "11": {"class_type": "ComfyUIDeployExternalText",
           "inputs": {"input_id": "prefix", "default_value": "invert"}},
    "1": {"class_type": "EmptyImage",
          "inputs": {"width": ["10", 0], "height": 8, "batch_size": 1, "color": 0xFF0000}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": ["11", 0]}},
}
SMALL_RETAINED = 1000
TARGET_MS = 100.0
TARGET_RATIO = 1.5
#: Runs recorded per pipelined round trip while filling.
FILL_BATCH = 500
WORKER = "bench-worker@host"


def graph_named(name: str) -> dict[str, Any]:
    return SMALL_GRAPH if name == "small" else json.loads(SD15_GRAPH.read_text())


@dataclass
class Deployment:
    """One database of the Valkey, with the comfyq objects that read and write it."""

    url: str
    settings: Any
    records: redis.Redis

    @classmethod
    def on(cls, server_url: str, database: int) -> Deployment:
        from comfyq.redis.connection import redis_client
        from comfyq.settings import Settings

        url = f"{server_url}/{database}"
        settings = Settings(redis_url=url, data_dir=Path("/tmp") / "comfyq-bench-scale")
        return cls(url, settings, redis_client(url))

    def client(self, publish: bool = True):
        """A producer ``Client``; without ``publish`` it records runs but queues no message."""
        from comfyq.producer.client import Client

        client = Client(self.settings, redis_client=self.records)
        if not publish:
            client.broker.publish_run = lambda run_id, gpu_type, priority=0: None
        return client


# -- filling --------------------------------------------------------------------------------------


def _outputs(run_id: str, graph: dict[str, Any]) -> list[dict[str, Any]]:
    """What a worker records for each SaveImage node (the shape of ``Runner._output_record``)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return [{"id": str(uuid.uuid4()), "run_id": run_id, "type": "output", "node_id": node_id,
             "node_meta": {"node_class": node["class_type"]},
             "created_at": stamp, "updated_at": stamp,
             "data": {"images": [{"url": f"/ui/outputs/{run_id}/0", "type": "output",
                                  "filename": f"ComfyUI_{node_id}_00001_.png", "subfolder": "",
                                  "is_public": False, "upload_duration": 0.0}]}}
            for node_id, node in graph.items() if node["class_type"] == "SaveImage"]


def fill_finished(deployment: Deployment, count: int, graph: dict[str, Any],
                  gpu_types: list[str]) -> None:
    """``count`` runs recorded as ``Client.submit`` records them (creations pipelined), then
    claimed and finished ``success`` as a worker does."""
    from comfyq.execution.runner import RUN_FIELDS
    from comfyq.models import RunStatus, parse_run_request
    from comfyq.runs.lease import RunLease
    from comfyq.runs.store import RunStore

    client = deployment.client(publish=False)
    store = RunStore(deployment.records, deployment.settings.run_retention_seconds)
    request = parse_run_request({"workflow_id": "bench-scale", "workflow_api_json": graph})
    done = 0
    while done < count:
        batch = [str(uuid.uuid4()) for _ in range(min(FILL_BATCH, count - done))]
        pipeline = deployment.records.pipeline(transaction=False)
        for index, run_id in enumerate(batch):
            gpu_type = gpu_types[(done + index) % len(gpu_types)]
            # The record the producer writes (Client.submit without its checks and publish).
            store.create(run_id, RunStatus.QUEUED,
                         client._initial_fields(run_id, request, gpu_type), pipeline)
        pipeline.execute()
        for run_id in batch:
            lease = RunLease(deployment.records, run_id, WORKER, 30.0)
            store.claim(run_id, RUN_FIELDS, lease.token, 30.0,
                        {"started_at": time.time(), "worker": WORKER, "live_status": "Started"})
            store.move(run_id, RunStatus.SUCCESS,
                       {"ended_at": time.time(), "live_status": "Done", "progress": 1.0,
                        "outputs": _outputs(run_id, graph)}, lease_token=lease.token)
        done += len(batch)


def fill_queued(deployment: Deployment, count: int, graph: dict[str, Any],
                gpu_types: list[str]) -> None:
    """``count`` runs submitted with ``Client.submit``, round-robin over ``gpu_types``."""
    client = deployment.client()
    for index in range(count):
        client.submit({"workflow_id": "bench-scale", "workflow_api_json": graph,
                       "gpu": gpu_types[index % len(gpu_types)]})


# -- the operations -------------------------------------------------------------------------------


def operations(deployment: Deployment) -> dict[str, Callable[[], Any]]:
    """Each operation the issue names, as a call on ``deployment``."""
    from prometheus_client import CollectorRegistry

    from comfyq.broker import Broker
    from comfyq.metrics import ComfyqCollector, render_metrics
    from comfyq.queue_overview import queue_states
    from comfyq.runs.hooks import RunHooks
    from comfyq.runs.listing import list_runs
    from comfyq.runs.store import RunStore
    from comfyq.web.presentation import run_row
    from comfyq.web.routes import DEFAULT_LIMIT
    from comfyq.web.templating import render
    from scheduler.reaper import reap_runs, recover_lost_messages

    settings, records = deployment.settings, deployment.records
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ComfyqCollector(settings, records))
    broker = Broker(settings)
    # The reaper's clock is past the lost-message cutoff of every queued run.
    later = settings.lost_message_seconds + 60
    reaper_store = RunStore(records, settings.run_retention_seconds,
                            clock=lambda: time.time() + later)

    def run_page_list() -> str:
        summaries = list_runs(records, limit=DEFAULT_LIMIT)
        moment = time.time()
        return render("runs_table.html", rows=[run_row(s, moment) for s in summaries],
                      caption=f"{len(summaries)} most recent runs")

    def reaper_pass() -> int:
        return (reap_runs(reaper_store, settings, broker.publish_run, RunHooks())
                + recover_lost_messages(reaper_store, settings, broker))

    return {
        "prometheus scrape": lambda: render_metrics(registry),
        "comfyq runs --limit 50": lambda: list_runs(records, limit=50),
        "comfyq queues": lambda: queue_states(records, broker, settings.gpu_types),
        "run pages' list": run_page_list,
        "reaper pass": reaper_pass,
    }


def timed(call: Callable[[], Any]) -> Callable[[], float]:
    def sample() -> float:
        start = time.perf_counter()
        call()
        return (time.perf_counter() - start) * 1000
    return sample


def check_state(small: Deployment, large: Deployment, queued: int) -> None:
    """The operations read what the fill wrote, and a reaper pass changed nothing."""
    from comfyq.queue_overview import queue_states
    from comfyq.redis import keys

    for deployment in (small, large):
        states = queue_states(deployment.records, deployment.client().broker,
                              deployment.settings.gpu_types)
        depth = sum(state.depth for state in states)
        if depth != queued:
            raise SystemExit(f"{deployment.url}: {depth} runs wait, {queued} were submitted")
        if deployment.records.zcard(keys.QUEUED_RUNS) != queued:
            raise SystemExit(f"{deployment.url}: the queued index changed during the benchmark")


def profile(name: str, call: Callable[[], Any], records: redis.Redis, repeat: int) -> None:
    """Where ``call``'s time goes: Python (cProfile) and the server's commands."""
    records.config_resetstat()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        call()
    profiler.disable()
    print(f"\n--- {name}: cProfile over {repeat} calls (cumulative) ---")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(14)
    stats = records.info("commandstats")
    busiest = sorted(stats.items(), key=lambda item: -item[1]["usec"])[:8]
    print(f"--- {name}: Valkey commands over {repeat} calls ---")
    for command, figures in busiest:
        print(f"  {command:<28} calls {figures['calls']:>8}  usec {figures['usec']:>9}  "
              f"usec/call {figures['usec_per_call']:.1f}")


# -- memory ---------------------------------------------------------------------------------------


def used_memory(records: redis.Redis) -> int:
    return int(records.info("memory")["used_memory"])


def memory_per_run(server_url: str, database: int, graph_name: str, count: int,
                   gpu_types: list[str]) -> dict[str, float]:
    """Bytes of Redis memory a retained run and a queued run of ``graph_name`` take."""
    from comfyq.redis import keys

    graph = graph_named(graph_name)
    deployment = Deployment.on(server_url, database)
    # SYNC: a lazy free still under way would blur the delta (a database of our own server).
    deployment.records.execute_command("FLUSHDB", "SYNC")
    before = used_memory(deployment.records)
    fill_finished(deployment, count, graph, gpu_types)
    retained = used_memory(deployment.records)
    sample = deployment.records.zrange(keys.RUNS_INDEX, 0, 0)[0]
    record_bytes = deployment.records.memory_usage(keys.run(sample), samples=0)
    fill_queued(deployment, count, graph, gpu_types)
    queued = used_memory(deployment.records)
    deployment.records.execute_command("FLUSHDB", "SYNC")
    return {"retained": (retained - before) / count, "queued": (queued - retained) / count,
            "record": float(record_bytes)}


def print_memory(server_url: str, count: int, gpu_types: list[str]) -> None:
    print(f"Redis memory per run ({count:,} runs each; INFO used_memory delta, "
          f"and MEMORY USAGE of one finished record)")
    print(f"{'graph':<8} {'retained run':>13} {'queued run':>11} {'one record':>11}")
    for graph_name in ("small", "sd15"):
        figures = memory_per_run(server_url, 2, graph_name, count, gpu_types)
        print(f"{graph_name:<8} {figures['retained']:>11.0f} B {figures['queued']:>9.0f} B "
              f"{figures['record']:>9.0f} B", flush=True)


# -- the report -----------------------------------------------------------------------------------


def report(medians: dict[str, tuple[float, float]], large_count: int) -> bool:
    print(f"\n{'operation':<26} {'ms @ 1k':>9} {f'ms @ {large_count:,}':>13} {'ratio':>7}  target")
    all_met = True
    for name, (small_ms, large_ms) in medians.items():
        ratio = large_ms / small_ms if small_ms else float("inf")
        met = large_ms < TARGET_MS and ratio <= TARGET_RATIO
        all_met &= met
        print(f"{name:<26} {small_ms:>9.2f} {large_ms:>13.2f} {ratio:>6.2f}x  "
              f"{'met' if met else 'MISSED'}")
    return all_met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000,
                        help="finished runs retained in the large case (default 100000; "
                             "e.g. 20000 for a quick check)")
    parser.add_argument("--queued", type=int, default=1000,
                        help="runs waiting, over every GPU type, in both cases (default 1000)")
    parser.add_argument("--repeat", type=int, default=21,
                        help="timings per operation and case; the median is reported")
    parser.add_argument("--graph", choices=("small", "sd15"), default="sd15",
                        help="graph of the timed cases' runs (default sd15)")
    parser.add_argument("--memory-runs", type=int, default=5000,
                        help="runs per memory measurement (default 5000)")
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile and Valkey command statistics of each operation "
                             "at the large count")
    args = parser.parse_args()

    server = start_embedded_redis(save="", appendonly="no")
    server_url = server.connection_url
    try:
        small, large = Deployment.on(server_url, 0), Deployment.on(server_url, 1)
        gpu_types = list(small.settings.gpu_types)
        # Memory first, on an empty server, so no earlier fill's freed memory blurs the deltas.
        print_memory(server_url, args.memory_runs, gpu_types)
        graph = graph_named(args.graph)
        for deployment, count in ((small, SMALL_RETAINED), (large, args.runs)):
            start = time.perf_counter()
            fill_finished(deployment, count, graph, gpu_types)
            fill_queued(deployment, args.queued, graph, gpu_types)
            print(f"filled db {deployment.url.rsplit('/', 1)[1]}: {count:,} finished + "
                  f"{args.queued:,} queued ({args.graph} graph, {len(gpu_types)} GPU types) in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
        small_ops, large_ops = operations(small), operations(large)
        medians = {}
        for name in small_ops:
            samples = in_turns({"small": timed(small_ops[name]), "large": timed(large_ops[name])},
                               args.repeat)
            medians[name] = (statistics.median(samples["small"]),
                             statistics.median(samples["large"]))
        check_state(small, large, args.queued)
        all_met = report(medians, args.runs)
        if args.profile:
            for name, call in large_ops.items():
                profile(name, call, large.records, args.repeat)
    finally:
        server.stop()
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
