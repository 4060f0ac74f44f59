"""Separate network hosts for a test: Linux network namespaces on one virtual switch.

Each host is a network namespace with one veth link (``eth0``) to a bridge that lives in a
switch namespace of its own (the root namespace's bridge filtering and firewall never see the
traffic); the test's own process joins through one more link, so it can reach every host. Hosts
reach each other only by address. :meth:`HostNetwork.cut` takes a host's switch port down, as
pulling its cable would (``ip link set ... down``): TCP connections stay open but nothing passes
until :meth:`HostNetwork.heal`.

Every namespace and link is made by :class:`HostNetwork` and removed by :meth:`close`, which
its context manager calls whatever happens.
"""

from __future__ import annotations

import ctypes
import os
import queue
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

#: ``CLONE_NEWNET`` from ``<sched.h>``: ``setns`` into a network namespace.
_CLONE_NEWNET = 0x40000000

T = TypeVar("T")


class NamespacesUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, no ``ip``, no kernel support)."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str
    #: The switch's port of this host's link.
    port: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host."""
        return ["ip", "netns", "exec", self.namespace, *argv]


class HostNetwork:
    """Hosts on ``10.211.<octet>.0/24``: the test's process is ``.1``, hosts ``.11`` on.

    :param octet: the third octet of the subnet.
    :param tag: a short prefix of every namespace and link name (links have 15 characters).
    """

    def __init__(self, octet: int, tag: str) -> None:
        self.subnet = f"10.211.{octet}"
        self.tag = tag
        self.switch = f"{tag}-switch"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._root_link = f"{tag}r"
        try:
            _ip("netns", "add", self.switch)
        except (RuntimeError, OSError) as error:
            raise NamespacesUnavailable(str(error)) from None
        self._namespaces.append(self.switch)
        try:
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            self._link(self._root_link, f"{tag}p0", None, f"{self.subnet}.1")
        except BaseException:
            self.close()
            raise

    def _link(self, inside: str, port: str, namespace: str | None, address: str) -> None:
        _ip("link", "add", inside, "type", "veth", "peer", "name", port)
        _ip("link", "set", port, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        prefix = ["-n", namespace] if namespace else []
        if namespace:
            _ip("link", "set", inside, "netns", namespace)
            _ip(*prefix, "link", "set", inside, "name", "eth0")
            inside = "eth0"
            _ip(*prefix, "link", "set", "lo", "up")
        _ip(*prefix, "addr", "add", f"{address}/24", "dev", inside)
        _ip(*prefix, "link", "set", inside, "up")

    def add_host(self, name: str) -> Host:
        number = len(self.hosts) + 1
        namespace = f"{self.tag}-{name}"
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        host = Host(name, namespace, f"{self.subnet}.{10 + number}", f"{self.tag}p{number}")
        self._link(f"{self.tag}h{number}", host.port, namespace, host.address)
        self.hosts[name] = host
        return host

    def cut(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "down")

    def heal(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "up")

    def shape(self, name: str, rate: str) -> None:
        """Let traffic towards host ``name`` through at ``rate`` only (``tc`` notation, e.g.
        ``16mbit``), so a transfer to it lasts long enough to be cut mid-way."""
        subprocess.run(["tc", "-n", self.switch, "qdisc", "replace", "dev",
                        self.hosts[name].port, "root", "tbf", "rate", rate, "burst", "64kb",
                        "latency", "2s"], check=True, capture_output=True, timeout=30)

    def unshape(self, name: str) -> None:
        subprocess.run(["tc", "-n", self.switch, "qdisc", "del", "dev", self.hosts[name].port,
                        "root"], check=False, capture_output=True, timeout=30)

    def bytes_unsent(self, name: str, address: str, port: int) -> int:
        """Bytes host ``name`` has sent to ``address:port`` that are not acknowledged yet."""
        lines = subprocess.run(
            ["ip", "netns", "exec", self.hosts[name].namespace, "ss", "-tnH", "state",
             "established", "dst", f"{address}:{port}"],
            capture_output=True, text=True, check=False, timeout=30).stdout.splitlines()
        # With a state filter ss prints no state column: Recv-Q, Send-Q, local, peer.
        return max((int(line.split()[1]) for line in lines if line.split()), default=0)

    def close(self) -> None:
        """Remove every namespace (their links go with them) and the test's own link."""
        for namespace in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        self._namespaces.clear()
        subprocess.run(["ip", "link", "del", self._root_link], capture_output=True, check=False)

    def __enter__(self) -> HostNetwork:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def leftover_names(tag: str) -> list[str]:
    """Namespaces and links named with ``tag`` that still exist (none after :meth:`close`)."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=False).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                           check=False).stdout
    return [line.split()[0] for line in namespaces.splitlines() if line.startswith(tag)] + [
        line.split(":")[1].strip() for line in links.splitlines()
        if line.split(":")[1].strip().startswith(tag)]


class NamespaceThread:
    """A thread of this process that lives in a host's network namespace: what it calls opens
    its sockets there (a thread's network namespace is its own, ``setns(2)``)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._calls: queue.Queue[tuple[Callable[[], Any], queue.Queue] | None] = queue.Queue()
        ready: queue.Queue[BaseException | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                        name=f"netns-{host.name}")
        self._thread.start()
        failure = ready.get(timeout=10)
        if failure is not None:
            raise failure

    def _serve(self, ready: queue.Queue) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            descriptor = os.open(f"/var/run/netns/{self.host.namespace}", os.O_RDONLY)
            try:
                if libc.setns(descriptor, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns into " + self.host.namespace)
            finally:
                os.close(descriptor)
        except BaseException as error:
            ready.put(error)
            return
        ready.put(None)
        while (job := self._calls.get()) is not None:
            function, answer = job
            try:
                answer.put((True, function()))
            except BaseException as error:
                answer.put((False, error))

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` run in the namespace; its result, or its exception."""
        answer: queue.Queue = queue.Queue()
        self._calls.put((lambda: function(*args, **kwargs), answer))
        succeeded, value = answer.get()
        if not succeeded:
            raise value
        return value

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join(timeout=10)
