"""``comfyq demo``: everything on one laptop, a real run through every stage, then clean up.

It runs apart from any deployment: in an empty database of its own on the configured Redis when
one answers (:mod:`.demo_database`), else on an embedded Valkey it starts; starts
``comfyq worker`` with simulated GPUs (GPU workers, the callback worker and beat); receives
webhooks on a local HTTP server; submits a sample workflow with inputs; shows its progress; and
prints the output files and the webhooks received. It succeeds only when the run succeeded and
every one of its webhooks reached the receiver.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import redis

from comfyq.devtools.demo_database import claim_empty_database
from comfyq.devtools.embedded_redis import (
    INSTALL_HINT,
    embedded_redis_installed,
    redis_answers,
    start_embedded_redis,
)
from comfyq.devtools.local_fleet import LocalFleet
from comfyq.devtools.local_receiver import WebhookReceiver
from comfyq.errors import ComfyqError
from comfyq.redis.connection import redis_location
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


def _demo_redis(cleanups: list) -> str:
    """The URL of a database the demo has to itself."""
    configured = get_settings().redis_url
    where = redis_location(configured)
    if redis_answers(configured):
        database = claim_empty_database(configured)
        if database is not None:
            cleanups.append(lambda: print(f"Deleted the {database.release()} keys the demo "
                                          f"wrote in database {database.index}."))
            print(f"Using the Redis at {where} in database {database.index}, empty and claimed "
                  "for the demo: its queues are apart from any deployment's")
            return database.url
        why = f"The Redis at {where} has no empty database for the demo"
    else:
        why = f"No Redis answered at {where}"
    if not embedded_redis_installed():
        raise ComfyqError(f"{why}, and the embedded server is not installed: {INSTALL_HINT} "
                          "(or set COMFYQ_REDIS_URL to a Redis with an empty database)")
    server = start_embedded_redis(data_dir=Path(tempfile.mkdtemp(prefix="comfyq-demo-valkey-")),
                                  save="")
    cleanups.append(server.stop)
    url = f"{server.connection_url}/0"
    print(f"{why}; started an embedded Valkey at {url}")
    return url


def run_demo(gpus: str = "A100,T4", timeout: float = 120.0) -> int:
    """Run the demo; returns 0 when the sample run succeeded and its final webhook arrived."""
    cleanups: list = []
    try:
        return _demo(gpus.split(","), timeout, cleanups)
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
        if cleanups:
            print("Stopped every process the demo started.")


def _demo(gpus: list[str], timeout: float, cleanups: list) -> int:
    url = _demo_redis(cleanups)
    data_dir = Path(get_settings().data_dir).resolve()
    env = {
        "COMFYQ_REDIS_URL": url,
        "COMFYQ_BROKER_URL": url,
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
    # Beat's schedule files are named after the fleet's one-off host name: not worth keeping
    # (removed once the fleet stopped, since beat writes them as it stops).
    cleanups.append(lambda: [path.unlink() for path in
                             data_dir.glob(f"beat-schedule-{fleet.hostname}*")])
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
    webhooks_arrived = _show_webhooks(comfyq_client, run_id, receiver)
    return 0 if run.status.value == "success" and webhooks_arrived else 1


def _show_webhooks(client, run_id: str, receiver: WebhookReceiver,
                   timeout: float = 30.0) -> bool:
    """Print the webhooks received; True when the run's final status reached the receiver and
    none of its events is left undelivered (progress updates in between may be coalesced)."""
    from comfyq.webhooks.outbox import list_deliveries

    final = client.get_run(run_id).status.value
    deadline = time.monotonic() + timeout
    while True:
        state = client.get_run(run_id).webhook_status
        bodies = [delivery.json() for delivery in receiver.accepted()]
        final_arrived = any(body["status"] == final for body in bodies)
        if state in ("dead", "gone") or (final_arrived and state == "delivered") or (
                time.monotonic() > deadline):
            break
        time.sleep(0.1)  # the outbox announces nothing; a tenth of a second is quick enough
    print(f"Webhooks received at {receiver.url}:")
    for body in bodies:
        print(f"  seq={body.get('seq')} status={body['status']:<10} "
              f"progress={body['progress']:.2f} live_status={body.get('live_status')!r}")
    undelivered = [f"seq {event['seq']} {event['state']}"
                   for event in list_deliveries(client.redis, limit=0)
                   if event["run_id"] == run_id and event["state"] != "delivered"]
    if final_arrived and not undelivered:
        return True
    print("  not every webhook arrived: "
          + ", ".join(undelivered or [f"the final status ({final}) did not"]))
    return False
