"""Benchmark: what comfyq adds to a run on a ComfyUI server, against driving that server directly.

Both sides run the same 3-node model-free graph (EmptyImage -> ImageInvert -> SaveImage, a new
``filename_prefix`` each time so SaveImage really runs) on the same server, one of each in turn
(which goes first alternates):

* comfyq: ``Client.submit`` -> Redis -> a real ``comfyq worker --comfyui-url`` process -> POST
  /prompt, websocket events, the output file taken into comfyq's output store (linked from the
  server's output folder, which this host shares, as for a server ``--comfyui-path`` launches;
  ``--over-http`` downloads it with ``/view`` instead), run record -> ``Client.wait`` returns
  the successful run;
* direct: POST /prompt with a ``client_id`` whose websocket is already open, until its
  ``execution_success`` frame.

A third side shows the floor: a bare Celery round trip (an echo task, results in Redis, one
prefork worker; ``bench.bare_celery_app``), since comfyq's route is a Celery round trip plus the
ComfyUI work. Target: comfyq adds at most 5 ms at p50. Run ``python bench/bench_comfyui.py`` for
the stand-in ComfyUI (started here), or ``--url http://127.0.0.1:8188 [--output-dir FOLDER]`` for
a real one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import requests
import websocket

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_pipeline import one_bare_round_trip
from bench.local_deployment import start_deployment
from bench.measuring import in_turns, percentile
from comfyq.devtools.local_fleet import LocalFleet
from comfyq.devtools.standin_process import StandinProcess

#: Target: comfyq's extra p50 latency over the direct route.
TARGET_OVERHEAD_MS = 5.0


def graph(prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0x3366CC}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


class DirectClient:
    """A ComfyUI client with its websocket open, as a program driving ComfyUI itself has."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client_id = f"bench-direct-{uuid.uuid4().hex[:8]}"
        self.session = requests.Session()
        self.session.trust_env = False  # as comfyq's client: no proxy lookups per request
        self.socket = websocket.create_connection(
            url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}", timeout=60)

    def run(self) -> float:
        prompt_id = uuid.uuid4().hex
        start = time.perf_counter()
        answer = self.session.post(f"{self.url}/prompt", timeout=60, json={
            "prompt": graph(f"bench_direct_{prompt_id[:12]}"), "prompt_id": prompt_id,
            "client_id": self.client_id})
        answer.raise_for_status()
        while True:
            message = self.socket.recv()
            if not isinstance(message, str):
                continue
            frame = json.loads(message)
            data = frame.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if frame["type"] == "execution_success":
                return time.perf_counter() - start
            if frame["type"] in ("execution_error", "execution_interrupted"):
                raise RuntimeError(f"direct run failed: {frame}")


def comfyq_run(client) -> float:
    request = {"workflow_id": "bench-comfyui", "gpu": "A100",
               "workflow_api_json": graph("bench_comfyq")}
    start = time.perf_counter()
    run = client.wait(client.submit(request), timeout=60)
    elapsed = time.perf_counter() - start
    if run.status.value != "success":
        raise RuntimeError(f"comfyq run {run.id} ended {run.status.value}: {run.error}")
    return elapsed


def summary(name: str, samples: list[float]) -> str:
    return (f"{name:>11}: p50 {percentile(samples, 0.5) * 1000:7.2f} ms  "
            f"p90 {percentile(samples, 0.9) * 1000:7.2f} ms  "
            f"mean {statistics.fmean(samples) * 1000:7.2f} ms  (n={len(samples)})")


def measure(url: str, runs: int, warmup: int, work: Path,
            server_output_dir: Path | None) -> dict[str, list[float]]:
    from comfyq.producer.client import Client

    deployment = start_deployment(COMFYQ_DATA_DIR=str(work / "data"),
                                  COMFYQ_PROGRESS_INTERVAL_SECONDS="0.2",
                                  **({"COMFYQ_COMFYUI_OUTPUT_DIR": str(server_output_dir)}
                                     if server_output_dir else {}))
    from bench.bare_celery_app import results_app  # reads the deployment's Valkey address
    bare_worker = deployment.plain_worker("bare")
    try:
        fleet = LocalFleet(["A100"], deployment.env,
                           extra_args=["--no-beat", "--no-callbacks", "--comfyui-url", url],
                           log_path=str(work / "fleet.log"))
        with fleet:
            fleet.wait_ready(redis.Redis.from_url(deployment.url, decode_responses=True),
                             timeout=120, callbacks=False)
            client = Client()
            direct = DirectClient(url)
            sides = {"comfyq": lambda: comfyq_run(client), "direct": direct.run,
                     "celery": lambda: one_bare_round_trip(results_app)}
            for _ in range(warmup):
                for side in sides.values():
                    side()
            # One of each in turn, so all see the same server state, the first side
            # alternating so none always runs right after another's work.
            return in_turns(sides, runs)
    finally:
        bare_worker.terminate()
        bare_worker.wait()
        deployment.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running ComfyUI (default: start the stand-in)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--output-dir", type=Path,
                        help="the server's output folder, when it is on this host (the "
                             "stand-in's by default); comfyq's worker then takes outputs from "
                             "it (COMFYQ_COMFYUI_OUTPUT_DIR)")
    parser.add_argument("--over-http", action="store_true",
                        help="download outputs over HTTP (/view) even from a server on this host")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="comfyq-bench-comfyui-"))
    standin = None
    url = args.url
    if url is None:
        standin = StandinProcess(work / "standin", log_path=work / "standin.log").start()
        url = standin.url
    try:
        output_dir = args.output_dir or (work / "standin" / "output" if standin else None)
        samples = measure(url.rstrip("/"), args.runs, args.warmup, work,
                          None if args.over_http else output_dir)
    finally:
        if standin is not None:
            standin.stop()

    kind = "stand-in ComfyUI" if standin is not None else "ComfyUI"
    taken = ("over HTTP (/view)" if args.over_http or not output_dir
             else f"from its output folder {output_dir}")
    print(f"{kind} at {url}; 3-node model-free graph; submit to success; comfyq takes the "
          f"outputs {taken}")
    for side, name in (("comfyq", "comfyq"), ("direct", "direct"), ("celery", "bare Celery")):
        print(summary(name, samples[side]))
    ours, theirs = percentile(samples["comfyq"], 0.5), percentile(samples["direct"], 0.5)
    overhead = (ours - theirs) * 1000
    floor = percentile(samples["celery"], 0.5) * 1000
    verdict = "met" if overhead <= TARGET_OVERHEAD_MS else "MISSED"
    print(f"comfyq adds {overhead:.2f} ms at p50 (target <= {TARGET_OVERHEAD_MS:g} ms: {verdict}); "
          f"a bare Celery round trip alone takes {floor:.2f} ms, so comfyq's share beyond "
          f"Celery's is {overhead - floor:+.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
