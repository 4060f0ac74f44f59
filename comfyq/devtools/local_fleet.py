"""Start ``comfyq worker`` on this machine and wait until its workers serve their queues.

Used by ``comfyq demo``, the tests and the benchmarks, so all three run the real command a user
runs, in real processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from comfyq.worker_presence import online_workers
from comfyq.workers.supervisor import lead_group_and_die_with_parent


class LocalFleet:
    """A ``comfyq worker --gpus ...`` process tree.

    :param gpus: simulated GPU types, one worker each, e.g. ``["A100", "T4"]``.
    :param env: environment overrides for the workers (``COMFYQ_REDIS_URL`` at least).
    :param extra_args: more ``comfyq worker`` arguments.
    """

    def __init__(self, gpus: Sequence[str], env: Mapping[str, str],
                 extra_args: Sequence[str] = (), log_path: str | None = None,
                 hostname: str | None = None) -> None:
        self.gpus = list(gpus)
        self.env = {**os.environ, **env}
        self.hostname = hostname or f"fleet{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.args = ["--gpus", ",".join(self.gpus), "--hostname", self.hostname, *extra_args]
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> LocalFleet:
        output: Any = subprocess.DEVNULL
        if self.log_path:
            self._log = open(self.log_path, "ab")
            output = self._log
        command = [sys.executable, "-m", "comfyq.cli", "worker", *self.args]
        # A test run that is killed must not leave its fleet behind.
        self.process = subprocess.Popen(command, env=self.env, stdout=output,
                                        stderr=subprocess.STDOUT,
                                        preexec_fn=lead_group_and_die_with_parent)
        return self

    def workers(self, client: redis.Redis) -> list[dict[str, Any]]:
        """This fleet's workers that are online now."""
        return [w for w in online_workers(client) if w["name"].endswith(f"@{self.hostname}")]

    def wait_ready(self, client: redis.Redis, timeout: float = 60.0,
                   callbacks: bool = True) -> None:
        """Block until every GPU worker (and the callback worker) has announced itself."""
        wanted = Counter(self.gpus)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"comfyq worker exited with code {self.process.returncode}")
            online = self.workers(client)
            have = Counter(w["gpu_type"] for w in online if w.get("gpu_type"))
            has_callbacks = any(w["name"].startswith("callbacks@") for w in online)
            if have == wanted and (has_callbacks or not callbacks):
                return
            time.sleep(0.2)
        raise TimeoutError(f"workers {self.gpus} not online after {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the supervisor (a warm stop of every worker), then make sure all are gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        if self._log:
            self._log.close()

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
