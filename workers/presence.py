"""Workers announce themselves in Redis while they are up, with what they serve.

Each worker keeps ``comfyq.keys.worker(name)`` alive with a TTL, refreshed by a timer thread: a
worker that dies simply disappears after the TTL. Tests, the demo, ``comfyq queues`` and the
API's readiness check read this instead of asking Celery's remote control, which needs every
worker to answer a broadcast in time.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown

from comfyq import keys
from comfyq.runs import now
from comfyq.settings import get_settings

logger = logging.getLogger(__name__)

#: Seconds a worker's presence key lives without a refresh.
PRESENCE_TTL_SECONDS = 15
#: Seconds between refreshes.
PRESENCE_REFRESH_SECONDS = 5

_stop = threading.Event()


def worker_description(hostname: str, queues: list[str]) -> dict[str, Any]:
    return {
        "name": hostname,
        "queues": queues,
        "gpu_type": os.environ.get("COMFYQ_WORKER_GPU_TYPE"),
        "device": os.environ.get("COMFYQ_WORKER_DEVICE", "cpu"),
        "device_name": os.environ.get("COMFYQ_WORKER_DEVICE_NAME"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": now(),
    }


def announce_presence(client: redis.Redis, description: dict[str, Any]) -> None:
    pipeline = client.pipeline()
    pipeline.set(keys.worker(description["name"]), json.dumps(description),
                 ex=PRESENCE_TTL_SECONDS)
    pipeline.sadd(keys.WORKERS_INDEX, description["name"])
    pipeline.execute()


def online_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """Every worker whose presence key is alive, sorted by name."""
    names = sorted(client.smembers(keys.WORKERS_INDEX))
    if not names:
        return []
    values = client.mget([keys.worker(name) for name in names])
    return [json.loads(value) for value in values if value]


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    queues = [queue.name for queue in sender.app.amqp.queues.consume_from.values()]
    description = worker_description(sender.hostname, queues)
    client = redis.Redis.from_url(get_settings().redis_url, decode_responses=True)
    # Node catalog (issue 3, comfyq.catalog_registry): GPU workers publish what they can run
    # before they show as online, so a producer that sees a worker also sees its catalog.
    from comfyq.catalog_registry import start_worker_publisher
    from comfyq.workers.runtime import catalog_source

    start_worker_publisher(client, description, catalog_source())

    def refresh() -> None:
        while True:
            try:
                announce_presence(client, description)
            except redis.RedisError as error:
                logger.warning("could not announce worker presence: %s", error)
            if _stop.wait(PRESENCE_REFRESH_SECONDS):
                return

    threading.Thread(target=refresh, name="comfyq-presence", daemon=True).start()


@worker_shutdown.connect
def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    _stop.set()
    # Node catalog (issue 3): withdraw this worker's catalog from its GPU type's.
    from comfyq.catalog_registry import stop_worker_publisher

    stop_worker_publisher()
    try:
        client = redis.Redis.from_url(get_settings().redis_url, decode_responses=True)
        client.delete(keys.worker(sender.hostname))
    except (redis.RedisError, AttributeError):
        pass
