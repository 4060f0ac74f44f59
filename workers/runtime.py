"""What a GPU worker process builds once: its run store, backend and runner.

Built lazily inside the pool process that executes runs, after the fork, so no Redis connection
(and no CUDA context) is ever shared across a fork. The worker's main process builds its own
(``comfyq.workers.stuck_runs``), never through these caches, which its forks would inherit.
"""

from __future__ import annotations

import functools
import os

import redis

from comfyq.broker import Broker
from comfyq.execution.runner import RunRunner, WorkerIdentity
from comfyq.redis.connection import redis_client as connect
from comfyq.runs.hooks import RunHooks
from comfyq.runs.store import RunStore
from comfyq.settings import get_settings
from comfyq.webhooks.events import webhook_hooks
from comfyq.webhooks.settings import get_webhook_settings


@functools.cache
def redis_client() -> redis.Redis:
    # A run's writes (progress, heartbeat, its end) ride out a Redis restart or a Sentinel
    # failover instead of failing the run; the lease fences a write retried too late.
    settings = get_settings()
    return connect(settings.redis_url, retry_seconds=settings.outage_retry_seconds)


@functools.cache
def broker() -> Broker:
    return Broker(get_settings())


@functools.cache
def run_hooks() -> RunHooks:
    """Who hears of the run changes this process makes: the webhook outbox."""
    return hooks_of(redis_client(), broker())


def hooks_of(client: redis.Redis, publisher: Broker) -> RunHooks:
    return webhook_hooks(client, publisher.send_webhook_delivery, get_webhook_settings())


@functools.cache
def run_store() -> RunStore:
    return RunStore(redis_client(), get_settings().run_retention_seconds)


def build_backend():
    """The graph backend this worker was configured with: a ComfyUI server when
    ``COMFYQ_COMFYUI_URL`` is set (``comfyq worker --comfyui-url/--comfyui-path``), else
    in-process."""
    settings = get_settings()
    if settings.comfyui_url:
        from comfyq.comfyui.backend import ComfyUIBackend, ComfyUIOptions

        return ComfyUIBackend(ComfyUIOptions.from_settings(settings, settings.comfyui_url))
    from comfyq.execution.inprocess import InProcessBackend
    from comfyq.execution.registry import node_classes

    return InProcessBackend(node_classes(), tensor_library=settings.in_process_tensors)


def catalog_source():
    """What this worker publishes as its node catalog (``comfyq.catalog.registry``): its
    ComfyUI server's ``/object_info``, or the in-process registry's catalog."""
    settings = get_settings()
    if settings.comfyui_url:
        from comfyq.comfyui.catalog import server_catalog_source

        return server_catalog_source(settings.comfyui_url, settings.comfyui_request_timeout_seconds,
                                     settings.comfyui_startup_seconds)
    from comfyq.execution.registry import in_process_catalog

    return in_process_catalog


@functools.cache
def runner(worker_name: str) -> RunRunner:
    """The runner of this worker process."""
    settings = get_settings()
    identity = WorkerIdentity(worker_name, os.environ.get("COMFYQ_WORKER_DEVICE", "cpu"))
    return RunRunner(run_store(), settings, build_backend(), identity, run_hooks())
