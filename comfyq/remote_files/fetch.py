"""Fetching one input file by URL into this host's cache (see the package docstring)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import requests

from comfyq.errors import ComfyqError
from comfyq.remote_files.checks import KINDS, content_problem
from comfyq.settings import Settings, get_settings
from comfyq.storage.uploads import safe_file_name, uploads_dir
from comfyq.webhooks.safety import (
    AddressPolicy,
    UnsafeWebhookURL,
    check_webhook_url,
    display_url,
    resolve,
)
from comfyq.webhooks.settings import WebhookSettings, get_webhook_settings
from comfyq.webhooks.transport import session_for

_CHUNK_BYTES = 1 << 20


class InputFetchError(ComfyqError, ValueError):
    """An input file could not be fetched or is not what its input takes; the message says
    which URL (without its query) and why."""


def fetch_input(url: str, kind: str = "file", settings: Settings | None = None,
                webhook_settings: WebhookSettings | None = None) -> Path:
    """The local path of the file at ``url``, fetched now or found in this host's cache.

    :param kind: ``file``, ``image``, ``lora`` or ``checkpoint`` (what its content must be).
    :raises InputFetchError: refused URL, unreachable, too large, too slow or wrong content.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    settings = settings or get_settings()
    url = url.strip()
    if url.lower().startswith("file:"):
        return _local_upload(url, settings)
    bucket_hosts = _bucket_hosts(settings)
    key = _cache_key(url, bucket_hosts)
    folder = settings.data_dir.resolve() / "input-cache" / hashlib.sha256(
        key.encode()).hexdigest()[:40]
    cached = folder / safe_file_name(unquote(urlsplit(url).path.rsplit("/", 1)[-1]))
    if cached.is_file():
        os.utime(folder)  # in use: the age sweep of this host's folders keeps it
        return cached
    session = input_session(url, settings, webhook_settings)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{uuid.uuid4().hex}.part"
    try:
        _download(url, partial, session, settings)
        problem = content_problem(partial, kind)
        if problem:
            raise InputFetchError(f"{display_url(url)}: {problem}")
        partial.replace(cached)
    finally:
        partial.unlink(missing_ok=True)
    return cached


def input_session(url: str, settings: Settings | None = None,
                  webhook_settings: WebhookSettings | None = None) -> requests.Session:
    """The session to fetch input ``url`` with: the webhooks' SSRF guard, which also allows
    the configured bucket's own addresses.

    :raises InputFetchError: the URL is refused (its scheme, its host's addresses).
    """
    settings = settings or get_settings()
    policy = _policy(url, _bucket_hosts(settings), webhook_settings or get_webhook_settings())
    try:
        check_webhook_url(url, policy)
    except UnsafeWebhookURL as error:
        raise InputFetchError(str(error).replace("webhook URL", "input URL")) from None
    return session_for(policy)


def _local_upload(url: str, settings: Settings) -> Path:
    root = uploads_dir(settings)
    path = Path(url2pathname(urlsplit(url).path)).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise InputFetchError(f"{url}: file:// inputs are read only inside {root} (files "
                              "uploaded through this host's API)")
    return path


def _bucket_hosts(settings: Settings) -> set[tuple[str, int | None]]:
    """``(host, port)`` of the configured bucket's endpoint and public base URL."""
    hosts = set()
    for base in (settings.s3_endpoint_url, settings.s3_public_base_url):
        if settings.storage == "s3" and base:
            parts = urlsplit(base)
            hosts.add(((parts.hostname or "").lower(), parts.port))
    return hosts


def _host_of(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    try:
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


def _cache_key(url: str, bucket_hosts: set[tuple[str, int | None]]) -> str:
    """The URL; without its query for the bucket's own URLs (a fresh signature, same object)."""
    if _host_of(url) in bucket_hosts:
        return url.split("?", 1)[0]
    return url


def _policy(url: str, bucket_hosts: set[tuple[str, int | None]],
            webhook_settings: WebhookSettings) -> AddressPolicy:
    policy = webhook_settings.address_policy
    host, port = _host_of(url)
    if (host, port) not in bucket_hosts:
        return policy
    addresses = resolve(host, port or 80)
    networks = tuple(ipaddress.ip_network(address.split("%", 1)[0]) for address in addresses)
    return AddressPolicy(policy.allow_loopback, policy.allow_private,
                         policy.allowed_networks + networks)


def _download(url: str, target: Path, session: requests.Session, settings: Settings) -> None:
    limit, seconds = settings.input_max_bytes, settings.input_fetch_timeout_seconds
    deadline = time.monotonic() + seconds
    shown = display_url(url)
    try:
        with session.get(url, stream=True, timeout=(10, 30)) as response:
            if response.status_code != 200:
                raise InputFetchError(f"{shown}: answered HTTP {response.status_code}")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise InputFetchError(f"{shown}: {declared} bytes, over the limit of {limit} "
                                      "(COMFYQ_INPUT_MAX_BYTES)")
            size = 0
            with target.open("wb") as sink:
                for chunk in response.iter_content(_CHUNK_BYTES):
                    size += len(chunk)
                    if size > limit:
                        raise InputFetchError(f"{shown}: over the limit of {limit} bytes "
                                              "(COMFYQ_INPUT_MAX_BYTES)")
                    if time.monotonic() > deadline:
                        raise InputFetchError(f"{shown}: not fetched within {seconds:g} s "
                                              "(COMFYQ_INPUT_FETCH_TIMEOUT_SECONDS)")
                    sink.write(chunk)
    except requests.RequestException as error:
        raise InputFetchError(f"{shown}: could not be fetched ({_reason(error)})") from None


def _reason(error: requests.RequestException) -> str:
    text = str(error)
    # A wrapped connection error: the guard's refusal is the part worth reading.
    marker = "refused: "
    if marker in text:
        return text[text.index(marker):].split("'")[0].split('"')[0].rstrip(")")
    return f"{type(error).__name__}: {text[:200]}"

