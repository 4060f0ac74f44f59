"""RabbitMQ for tests, never touching data a test did not create.

- :func:`fresh_vhost`: a virtual host of the machine's RabbitMQ (127.0.0.1:5672, guest/guest)
  made for one test and deleted after it; queues named as comfyq names them cannot collide.
- :class:`RabbitNode`: a ``rabbitmq-server`` node of the test's own (own name, ports, data
  folder and configuration), for what must not happen to a server others use: a restart, a short
  ``consumer_timeout``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

#: The machine's shared RabbitMQ (and CI's service).
SHARED_HOST, SHARED_PORT = "127.0.0.1", 5672
#: The management plugin's HTTP API, where it is enabled (a vhost can be made through it too).
MANAGEMENT_PORT = 15672
#: Seconds a ``rabbitmqctl`` call may take (each starts an Erlang VM).
RABBITMQCTL_TIMEOUT = 60
#: Seconds a node of the test's own may take to answer on its port.
NODE_START_TIMEOUT = 90


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout):
        return True
    return False


def unavailable_reason() -> str | None:
    """Why tests cannot use RabbitMQ here; None when they can."""
    if not answers(SHARED_HOST, SHARED_PORT):
        return f"no RabbitMQ answers at {SHARED_HOST}:{SHARED_PORT}"
    if not shutil.which("rabbitmqctl") and not answers(SHARED_HOST, MANAGEMENT_PORT):
        return ("neither rabbitmqctl nor the management API (port 15672) is here to make the "
                "test a vhost of its own")
    return None


def rabbitmqctl(*args: str, node: str | None = None) -> str:
    command = ["rabbitmqctl", *(("-n", node) if node else ()), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


@contextlib.contextmanager
def fresh_vhost(node: str | None = None, port: int = SHARED_PORT) -> Iterator[str]:
    """The ``amqp://`` URL of a new vhost that guest may use; deleted with all it holds after.
    Made with ``rabbitmqctl`` where it reaches the node, else with the management API."""
    name = f"comfyq-test-{uuid.uuid4().hex[:12]}"
    tool = _VhostsByCtl(node) if _ctl_reaches(node) else _VhostsByHttp()
    tool.add(name)
    try:
        yield f"amqp://guest:guest@{SHARED_HOST}:{port}/{name}"
    finally:
        tool.delete(name)


def _ctl_reaches(node: str | None) -> bool:
    if not shutil.which("rabbitmqctl"):
        return False
    try:
        rabbitmqctl("status", node=node)
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    return True


class _VhostsByCtl:
    def __init__(self, node: str | None) -> None:
        self.node = node

    def add(self, name: str) -> None:
        rabbitmqctl("add_vhost", name, node=self.node)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*", node=self.node)

    def delete(self, name: str) -> None:
        rabbitmqctl("delete_vhost", name, node=self.node)


class _VhostsByHttp:
    """The management plugin's HTTP API (a RabbitMQ in a container, without rabbitmqctl)."""

    def _call(self, method: str, path: str, body: dict | None = None) -> None:
        request = urllib.request.Request(
            f"http://{SHARED_HOST}:{MANAGEMENT_PORT}/api/{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"content-type": "application/json",
                     "authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        with urllib.request.urlopen(request, timeout=RABBITMQCTL_TIMEOUT):
            pass

    def add(self, name: str) -> None:
        self._call("PUT", f"vhosts/{name}")
        self._call("PUT", f"permissions/{name}/guest",
                   {"configure": ".*", "write": ".*", "read": ".*"})

    def delete(self, name: str) -> None:
        self._call("DELETE", f"vhosts/{name}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RabbitNode:
    """A ``rabbitmq-server`` node of the test's own, on free loopback ports, its data in a folder
    of its own under the system's temporary folder (deleted after; pytest's ``tmp_path`` would
    not do: the server drops to the ``rabbitmq`` user, who may not enter it).

    :param consumer_timeout_ms: RabbitMQ's ``consumer_timeout`` for this node, checked every
        second (the default check runs once a minute); None leaves RabbitMQ's default.
    """

    def __init__(self, consumer_timeout_ms: int | None = None) -> None:
        self.folder = folder = Path(tempfile.mkdtemp(prefix="comfyq-rabbitmq-"))
        folder.chmod(0o755)
        self.port, self.dist_port = free_port(), free_port()
        self.name = f"comfyq-test-{uuid.uuid4().hex[:8]}@localhost"
        self.process: subprocess.Popen | None = None
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.port}\nloopback_users = none\n")
        rabbit = [] if consumer_timeout_ms is None else [
            f"{{consumer_timeout, {consumer_timeout_ms}}}", "{channel_tick_interval, 1000}"]
        (folder / "advanced.config").write_text(f"[{{rabbit, [{', '.join(rabbit)}]}}].\n")
        (folder / "enabled_plugins").write_text("[].\n")
        for sub in ("mnesia", "log"):
            (folder / sub).mkdir(exist_ok=True)
        # The server drops to the rabbitmq user when started as root; it must own its folder.
        if os.geteuid() == 0 and shutil.which("chown"):
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(folder)], check=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{SHARED_HOST}:{self.port}//"

    def _env(self) -> dict[str, str]:
        base = str(self.folder)
        return {**os.environ, "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": f"{base}/mnesia", "RABBITMQ_LOG_BASE": f"{base}/log",
                "RABBITMQ_CONFIG_FILE": f"{base}/rabbitmq",
                "RABBITMQ_ADVANCED_CONFIG_FILE": f"{base}/advanced.config",
                "RABBITMQ_ENABLED_PLUGINS_FILE": f"{base}/enabled_plugins",
                "RABBITMQ_FEATURE_FLAGS_FILE": f"{base}/feature_flags",
                "RABBITMQ_PID_FILE": f"{base}/server.pid"}

    def start(self) -> RabbitNode:
        log = (self.folder / "server.out").open("ab")
        self.process = subprocess.Popen(["rabbitmq-server"], env=self._env(), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + NODE_START_TIMEOUT
        while not answers(SHARED_HOST, self.port, 0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.folder / "server.out").read_text(errors="replace")[-2000:]
                self.kill()
                raise RuntimeError(f"rabbitmq-server {self.name} did not start: {tail}")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        """SIGKILL the node's whole process group (the Erlang VM with it), as a crash would;
        :meth:`start` brings it back on the same ports with the same data."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        pid_file = self.folder / "server.pid"
        if pid_file.exists():  # the VM, if it left the group
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        self.process = None

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
