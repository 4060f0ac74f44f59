"""Benchmark: outputs in S3-compatible storage (a real S3 server, moto, on loopback) vs local.

1. Upload of a 4 MB PNG through comfyq's S3 storage (what a worker does with each output file):
   p50/p99 seconds and MB/s.
2. End to end, a one-node run with a small output (submit -> the client sees it final, outputs
   signed), on a worker keeping outputs in S3 and on one keeping them on its disk, in turns in
   the same run. Target: S3 storage adds at most 25 ms at p50.

Run: ``python bench/bench_storage.py [--uploads 20] [--runs 40]``. Starts its own Valkey, moto
server and workers (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.local_deployment import start_deployment  # noqa: E402
from bench.measuring import in_turns, percentile  # noqa: E402

#: A one-node graph with a small output file (a few bytes of text).
GRAPH = {"1": {"class_type": "ComfyDeployOutputText",
               "inputs": {"text": "hello", "filename_prefix": "bench", "file_type": "txt"}}}
WARMUP_RUNS = 3


def noise_png(megabytes: float = 4.0) -> bytes:
    """A PNG of random pixels (incompressible): about ``megabytes`` MB."""
    import numpy as np
    from PIL import Image

    side = int((megabytes * 1e6 / 3) ** 0.5)
    pixels = np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def bench_upload(settings, uploads: int) -> None:
    from comfyq.storage import RunFiles, output_storage

    storage = output_storage(settings)
    body = noise_png()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "noise.png"
        path.write_bytes(body)
        storage.keep(RunFiles("bench-warmup"), path, "noise.png")
        seconds = []
        for index in range(uploads):
            started = time.perf_counter()
            storage.keep(RunFiles(f"bench-upload-{index}"), path, "noise.png")
            seconds.append(time.perf_counter() - started)
    p50 = statistics.median(seconds)
    print(f"upload of a {len(body) / 1e6:.1f} MB PNG to S3 (moto, loopback), {uploads} uploads: "
          f"p50 {p50 * 1000:.1f} ms, p99 {percentile(seconds, 0.99) * 1000:.1f} ms, "
          f"{len(body) / 1e6 / p50:.0f} MB/s at p50")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=20, help="4 MB uploads to time")
    parser.add_argument("--runs", type=int, default=40, help="runs on each side")
    args = parser.parse_args()

    import redis

    from comfyq.devtools.local_fleet import LocalFleet
    from tests.s3_server import moto_server

    with moto_server() as s3:
        s3_env = s3.settings_env(prefix="bench")
        # This process reads records of both sides: it signs with the S3 settings.
        deployment = start_deployment(**{**s3_env, "COMFYQ_GPU_TYPES": "A100,T4",
                                         "COMFYQ_STORAGE": "local"})
        try:
            from comfyq.producer.client import Client
            from comfyq.settings import Settings

            bench_upload(Settings(**{"storage": "s3", "s3_endpoint_url": s3.endpoint_url,
                                     "s3_bucket": s3_env["COMFYQ_S3_BUCKET"],
                                     "s3_region": "us-east-1", "s3_addressing_style": "path",
                                     "s3_prefix": "bench"}), args.uploads)
            client = Client()
            watcher = redis.Redis.from_url(deployment.url, decode_responses=True)
            local_env = {**deployment.env, "COMFYQ_STORAGE": "local"}
            stored_env = {**deployment.env, "COMFYQ_STORAGE": "s3"}
            with LocalFleet(["A100"], local_env) as local_fleet, \
                    LocalFleet(["T4"], stored_env, ["--no-callbacks", "--no-beat"]) as s3_fleet:
                local_fleet.wait_ready(watcher, timeout=120)
                s3_fleet.wait_ready(watcher, timeout=120, callbacks=False)

                def one_run(gpu: str) -> float:
                    request = {"workflow_id": "bench", "workflow_api_json": GRAPH, "gpu": gpu}
                    started = time.perf_counter()
                    run = client.wait(client.submit(request), timeout=60)
                    elapsed = time.perf_counter() - started
                    assert run.status.value == "success", run.error
                    return elapsed

                for _ in range(WARMUP_RUNS):
                    one_run("A100"), one_run("T4")
                samples = in_turns({"local": lambda: one_run("A100"),
                                    "s3": lambda: one_run("T4")}, args.runs)
        finally:
            deployment.stop()
    for name in ("local", "s3"):
        seconds = samples[name]
        print(f"one-node run, {name:5} storage, {len(seconds)} runs: p50 "
              f"{statistics.median(seconds) * 1000:.1f} ms, p99 "
              f"{percentile(seconds, 0.99) * 1000:.1f} ms")
    added = statistics.median(samples["s3"]) - statistics.median(samples["local"])
    print(f"S3 storage adds {added * 1000:.1f} ms at p50 (target <= 25 ms: "
          f"{'meets' if added <= 0.025 else 'misses'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
