"""A real S3-compatible server for the tests: moto's server mode (``moto[server]``), started as
its own process on an address the test chooses, with a bucket made through boto3."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

#: Credentials moto accepts (any); given to every process that talks to the server.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "comfyq-test", "AWS_SECRET_ACCESS_KEY": "comfyq-test-secret",
                  "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "comfyq-outputs"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class S3Server:
    """A running moto server: its endpoint and the settings that point comfyq at it."""

    endpoint_url: str
    process: subprocess.Popen[bytes]

    def settings_env(self, prefix: str = "runs") -> dict[str, str]:
        """Environment of a comfyq process that keeps outputs in this server's bucket."""
        return {**S3_CREDENTIALS, "COMFYQ_STORAGE": "s3",
                "COMFYQ_S3_ENDPOINT_URL": self.endpoint_url, "COMFYQ_S3_REGION": "us-east-1", "COMFYQ_S3_BUCKET": BUCKET,
                "COMFYQ_S3_PREFIX": prefix, "COMFYQ_S3_ADDRESSING_STYLE": "path"}

    def client(self) -> Any:
        return s3_client(self.endpoint_url)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                        Prefix=prefix)
        return sorted(entry["Key"] for page in pages for entry in page.get("Contents", []))


def s3_client(endpoint_url: str) -> Any:
    """A boto3 client of the server at ``endpoint_url``, with the tests' credentials."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1",
                        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        config=Config(s3={"addressing_style": "path"}))


def moto_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]


def wait_for_s3(endpoint_url: str, process: subprocess.Popen[bytes] | None = None,
                timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            requests.get(endpoint_url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"moto server at {endpoint_url} did not answer in {timeout:g} s")


@contextmanager
def moto_server(host: str = "127.0.0.1", port: int | None = None,
                wrap: list[str] | None = None, env: Mapping[str, str] | None = None
                ) -> Iterator[S3Server]:
    """A moto server on ``host`` (a free port unless given), its bucket made; stopped after.

    :param wrap: a command prefix to start it with (``ip netns exec NAME``).
    """
    port = port or free_port(host)
    process = subprocess.Popen([*(wrap or []), *moto_command(host, port)],
                               env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = S3Server(f"http://{host}:{port}", process)
    try:
        wait_for_s3(server.endpoint_url, process)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class TcpRelay:
    """A loopback port that forwards connections to ``target`` while it is :meth:`up`, and
    refuses them (nothing listens) while it is down: an S3 server that goes away and comes back
    with its data, as a restart or a network outage looks to a client."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.target_port = host, target_port
        self.port = free_port(host)
        self._listener: socket.socket | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            server = socket.create_connection((self.host, self.target_port))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
