"""``comfyq demo``: everything on one laptop, a real run through every stage, then clean up.

It uses the configured Redis when one answers, else starts an embedded Valkey; starts
``comfyq worker`` with simulated GPUs (GPU workers, the callback worker and beat); receives
webhooks on a local HTTP server; submits a sample workflow with inputs; shows its progress; and
prints the output files and the webhooks received.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import redis

from comfyq.devtools.embedded_redis import redis_answers, start_embedded_redis
from comfyq.devtools.local_fleet import LocalFleet
from comfyq.devtools.local_receiver import WebhookReceiver
from comfyq.settings import get_settings, reset_settings

#: The sample: a solid image whose size and colour come from the run's inputs, scaled up,
#: blurred, inverted and saved. Every node is a real ComfyUI node name.
SAMPLE_WORKFLOW = {
    "1": {"class_type": "ComfyUIDeployExternalNumberInt",
          "inputs": {"input_id": "width", "default_value": 256}},
    "2": {"class_type": "ComfyUIDeployExternalNumberInt",
          "inputs": {"input_id": "color", "default_value": 16744448}},
    "3": {"class_type": "EmptyImage",
          "inputs": {"width": ["1", 0], "height": 128, "batch_size": 1, "color": ["2", 0]}},
    "4": {"class_type": "ImageScaleBy",
          "inputs": {"image": ["3", 0], "upscale_method": "bicubic", "scale_by": 4.0}},
    "5": {"class_type": "ImageBlur", "inputs": {"image": ["4", 0], "blur_radius": 15, "sigma": 4.0}},
    "6": {"class_type": "ImageInvert", "inputs": {"image": ["5", 0]}},
    "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "demo"}},
}


def _ensure_redis(stack: list) -> str:
    url = get_settings().redis_url
    if redis_answers(url):
        print(f"Using the Redis at {url}")
        return url
    data_dir = Path(tempfile.mkdtemp(prefix="comfyq-demo-valkey-"))
    server = start_embedded_redis(data_dir=data_dir, save="")
    stack.append(server.stop)
    url = f"{server.connection_url}/0"
    print(f"No Redis answered at {get_settings().redis_url}; started an embedded Valkey at {url}")
    return url


def run_demo(gpus: str = "A100,T4", timeout: float = 120.0) -> int:
    """Run the demo; returns 0 when the sample run succeeded and its final webhook arrived."""
    cleanups: list = []
    try:
        return _demo(gpus.split(","), timeout, cleanups)
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
        print("Stopped every process the demo started.")


def _demo(gpus: list[str], timeout: float, cleanups: list) -> int:
    url = _ensure_redis(cleanups)
    data_dir = Path(get_settings().data_dir).resolve()
    env = {
        "COMFYQ_REDIS_URL": url,
        "COMFYQ_GPU_TYPES": ",".join(sorted(set(get_settings().gpu_types) | set(gpus))),
        "COMFYQ_DATA_DIR": str(data_dir),
        # The demo's receiver listens on loopback, which webhooks refuse unless allowed.
        "COMFYQ_WEBHOOK_ALLOW_LOOPBACK": "true",
    }
    os.environ.update(env)
    reset_settings()
    receiver = WebhookReceiver().__enter__()
    cleanups.append(lambda: receiver.__exit__(None, None, None))
    fleet = LocalFleet(gpus, env, log_path=str(data_dir / "demo-workers.log"))
    data_dir.mkdir(parents=True, exist_ok=True)
    fleet.start()
    cleanups.append(fleet.stop)
    print(f"Starting workers for simulated GPUs {', '.join(gpus)} "
          f"(log: {data_dir / 'demo-workers.log'}) ...")
    client = redis.Redis.from_url(url, decode_responses=True)
    fleet.wait_ready(client, timeout=timeout)
    for worker in fleet.workers(client):
        print(f"  online: {worker['name']:<28} queue(s) {', '.join(worker['queues'])}")

    from comfyq.producer.client import Client
    from comfyq.progress_bar import follow_run

    comfyq_client = Client()
    run_id = comfyq_client.submit({
        "workflow_id": "demo-invert",
        "workflow_api_json": SAMPLE_WORKFLOW,
        "inputs": {"width": 320, "color": 0x2080FF},
        "webhook": receiver.url,
        "webhook_intermediate_status": True,
        "gpu": gpus[0],
    })
    print(f"Submitted run {run_id} for GPU {gpus[0]}")
    run = follow_run(comfyq_client, run_id, timeout=timeout)
    print(f"Run {run.status.value} on {run.worker} in {run.run_duration or 0:.3f} s")
    for output in run.outputs:
        for items in output.data.values():
            for item in items:
                print(f"  output of node {output.node_id}: {item.get('url', item)}")
    if run.error:
        print("  error:", json.dumps(run.error)[:500])
    got_final = receiver.wait_for(lambda ds: any(d.json()["status"] == run.status.value for d in ds),
                                  timeout=30)
    print(f"Webhooks received at {receiver.url}:")
    for delivery in receiver.accepted():
        body = delivery.json()
        print(f"  seq={body.get('seq')} status={body['status']:<10} progress={body['progress']:.2f} "
              f"live_status={body.get('live_status')!r}")
    return 0 if run.status.value == "success" and got_final else 1
