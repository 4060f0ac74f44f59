"""Benchmark: ``POST /run/workflow/queue`` over HTTP vs. ``Client.submit()`` in-process, in one run.

The API server (``comfyq api``, uvicorn, one process) is pinned to one core and a load generator
to another; ``Client.submit()`` runs in this process pinned to the server's core. Either way the
same core does comfyq's work (parse, validate, record, enqueue) while the embedded Valkey runs on
the other core, so the ratio measures what HTTP, auth and the event loop cost. Submits only
enqueue, so no worker is started. Target: HTTP >= 0.40x the in-process rate.

The load generator is asyncio over raw keep-alive connections, light enough that one core of it
outruns one core of server; each answer is checked to be 200 with a run id.

Run: ``python bench/bench_api.py [--requests 3000] [--rounds 3] [--connections 32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_pipeline import SUBMIT_GRAPH
from bench.measuring import in_turns
from comfyq.devtools.embedded_redis import start_embedded_redis

TOKEN = "bench-token"
PAYLOAD = {"workflow_id": "bench", "workflow_api_json": SUBMIT_GRAPH, "gpu": "A100",
           "inputs": {"seed": 1}}
TARGET_RATIO = 0.40


def pick_cores() -> tuple[int | None, int | None]:
    """(server core, load generator core); None when this host has one core to give."""
    cores = sorted(os.sched_getaffinity(0))
    return (cores[0], cores[1]) if len(cores) >= 2 else (None, None)


def pin(pid: int, core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(pid, {core})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- in-process ---------------------------------------------------------------------------------


def submit_rate(client, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        client.submit(PAYLOAD)
    return count / (time.perf_counter() - start)


# --- over HTTP ----------------------------------------------------------------------------------


def queue_request_bytes(port: int) -> bytes:
    body = json.dumps(PAYLOAD).encode()
    head = (f"POST /api/run/workflow/queue HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _one_connection(port: int, message: bytes, counter: list[int], total: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while counter[0] < total:
            counter[0] += 1
            writer.write(message)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            body = await reader.readexactly(length)
            if status != b"200" or b'"run_id"' not in body:
                raise RuntimeError(f"queue answered {status.decode()}: {body[:200]!r}")
    finally:
        writer.close()


async def _load(port: int, total: int, connections: int) -> float:
    message = queue_request_bytes(port)
    counter = [0]
    start = time.perf_counter()
    await asyncio.gather(*(_one_connection(port, message, counter, total)
                           for _ in range(connections)))
    return total / (time.perf_counter() - start)


def http_rate(port: int, total: int, connections: int) -> float:
    return asyncio.run(_load(port, total, connections))


def start_api(env: dict[str, str], port: int, core: int | None) -> subprocess.Popen:
    """``comfyq api`` on ``core``: taskset pins it from its first instruction, when installed."""
    taskset = shutil.which("taskset") if core is not None else None
    pinning = [taskset, "-c", str(core)] if taskset else []
    process = subprocess.Popen(
        [*pinning, sys.executable, "-m", "comfyq.cli", "api", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not taskset:
        pin(process.pid, core)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"comfyq api exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return process
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise TimeoutError("comfyq api did not answer /health")


# --- the run ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    server_core, load_core = pick_cores()
    valkey = start_embedded_redis(save="")
    url = f"{valkey.connection_url}/0"
    valkey_pid = int(redis.Redis.from_url(url).info("server")["process_id"])
    pin(valkey_pid, load_core)
    data_dir = tempfile.mkdtemp(prefix="comfyq-bench-api-")
    env = {**os.environ, "COMFYQ_REDIS_URL": url, "COMFYQ_GPU_TYPES": "A100,T4",
           "COMFYQ_DEFAULT_GPU": "T4", "COMFYQ_DATA_DIR": data_dir, "COMFYQ_API_TOKENS": TOKEN}
    os.environ.update(env)
    from comfyq import Client
    from comfyq.settings import Settings

    client = Client(Settings())
    port = free_port()
    server = start_api(env, port, server_core)
    try:
        pin(0, server_core)
        submit_rate(client, 200)  # warm-up: connections, scripts, imports
        pin(0, load_core)
        http_rate(port, 500, args.connections)
        def inprocess_round() -> float:
            pin(0, server_core)
            return submit_rate(client, args.requests)

        def http_round() -> float:
            pin(0, load_core)
            return http_rate(port, args.requests, args.connections)

        rounds = in_turns({"in-process": inprocess_round, "http": http_round}, args.rounds)
        inprocess, http = rounds["in-process"], rounds["http"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        valkey.stop()

    middle_inprocess, middle_http = statistics.median(inprocess), statistics.median(http)
    placement = (f"server and in-process submit on core {server_core}, load generator and "
                 f"Valkey on core {load_core}" if server_core is not None
                 else "one core only: nothing pinned")
    print(f"POST /run/workflow/queue vs Client.submit(), medians of {args.rounds} rounds of "
          f"{args.requests} requests, the first side alternating ({placement}; "
          f"{args.connections} keep-alive connections)")
    print(f"  in-process submit():     {middle_inprocess:8.0f} /s  "
          f"(rounds: {', '.join(f'{r:.0f}' for r in inprocess)})")
    print(f"  HTTP POST queue:         {middle_http:8.0f} /s  "
          f"(rounds: {', '.join(f'{r:.0f}' for r in http)})")
    ratio = middle_http / middle_inprocess
    print(f"  ratio HTTP/in-process:   {ratio:8.2f}   (target >= {TARGET_RATIO:.2f}: "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
