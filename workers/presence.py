"""A Celery worker announces itself (``comfyq.worker_presence``) from the moment it is ready
until it shuts down, refreshed by a timer thread, with what it serves.

``comfyq worker`` tells each GPU worker what it serves in ``COMFYQ_WORKER_GPU_TYPE``,
``COMFYQ_WORKER_DEVICE`` and ``COMFYQ_WORKER_DEVICE_NAME``; a worker started by hand
(``celery -A comfyq.tasks.app worker -Q comfyq.gpu.A100``) derives what is missing from its
queue (:func:`derived_worker_env`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

import redis
from celery.signals import worker_init, worker_ready, worker_shutdown

from comfyq.broker.names import gpu_queue
from comfyq.catalog.publishing import CatalogPublisher, CatalogSource
from comfyq.execution.registry import in_process_catalog
from comfyq.redis.connection import redis_client
from comfyq.runs.store import now
from comfyq.settings import get_settings
from comfyq.worker_presence import announce_presence, withdraw_presence

logger = logging.getLogger(__name__)

#: Seconds between refreshes.
PRESENCE_REFRESH_SECONDS = 5

_stop = threading.Event()
#: This worker's catalog publisher, from ready to shutdown (GPU workers only).
_worker_publisher: CatalogPublisher | None = None


def derived_worker_env(queues: list[str], env: Mapping[str, str]) -> dict[str, str]:
    """What a worker consuming ``queues`` is, for the ``COMFYQ_WORKER_*`` variables ``env``
    lacks: the GPU type of its one GPU queue, on the first visible CUDA device (or the CPU
    when ``CUDA_VISIBLE_DEVICES`` shows none)."""
    if env.get("COMFYQ_WORKER_GPU_TYPE"):
        return {}
    prefix = gpu_queue("")
    gpu_types = [queue.removeprefix(prefix) for queue in queues if queue.startswith(prefix)]
    if len(gpu_types) != 1:
        return {}  # a CPU worker, or one that mixes GPU types (nothing to say it is one of them)
    derived = {"COMFYQ_WORKER_GPU_TYPE": gpu_types[0]}
    if not env.get("COMFYQ_WORKER_DEVICE"):
        derived["COMFYQ_WORKER_DEVICE"] = "cuda:0" if env.get("CUDA_VISIBLE_DEVICES") else "cpu"
    return derived


@worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    # Before the pool forks, so the processes that execute runs inherit it.
    queues = [queue.name for queue in sender.app.amqp.queues.consume_from.values()]
    os.environ.update(derived_worker_env(queues, os.environ))


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


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    queues = [queue.name for queue in sender.app.amqp.queues.consume_from.values()]
    description = worker_description(sender.hostname, queues)
    client = redis_client(get_settings().redis_url)
    # GPU workers publish their node catalog (comfyq.catalog.registry) before they show as online,
    # so a producer that sees a worker also sees its catalog.
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
    # Withdraw this worker's catalog from its GPU type's.
    stop_worker_publisher()
    try:
        client = redis_client(get_settings().redis_url)
        withdraw_presence(client, sender.hostname)
    except (redis.RedisError, AttributeError):
        pass


def start_worker_publisher(client: redis.Redis, description: Mapping[str, Any],
                           source: CatalogSource = in_process_catalog) -> None:
    """Called when a worker is ready: GPU workers publish their catalog (CPU workers do not).

    A failure to build or publish is logged and the worker starts anyway: its runs are still
    validated against its peers' catalogs, or structurally.
    """
    global _worker_publisher
    gpu_type = description.get("gpu_type")
    if not gpu_type:
        return
    try:
        catalog, failed_packs = source()  # the registry logs each pack that failed to load
        publisher = CatalogPublisher(client, gpu_type, description["name"], catalog,
                                     failed_packs)
        publisher.start()
    except Exception:  # the worker must start even when its catalog cannot be published
        logger.exception("could not publish the node catalog of %s", description.get("name"))
        return
    _worker_publisher = publisher


def stop_worker_publisher() -> None:
    """Called when a worker shuts down: withdraw its catalog."""
    global _worker_publisher
    if _worker_publisher is not None:
        _worker_publisher.stop()
        _worker_publisher = None
