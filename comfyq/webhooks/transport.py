"""One HTTP attempt of a webhook delivery, and what its outcome means for the outbox.

A process keeps one `requests.Session` per address policy, so deliveries to the same receiver
reuse kept-alive connections. Redirects are not followed (a redirect is a failure: the receiver
must give the URL it means), answers are read only up to a size cap and a total deadline, and
each new connection resolves the host again and connects only to addresses the policy allows,
checked before connecting (DNS may have changed since the URL was checked).
"""

from __future__ import annotations

import enum
import os
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from comfyq.webhooks.safety import (
    AddressPolicy,
    UnresolvableWebhookHost,
    UnsafeWebhookURL,
    display_url,
)

#: Connections kept alive per receiver host (a callback worker's threads share them).
POOL_MAXSIZE = 32
USER_AGENT = "comfyq-webhooks/1"
#: Statuses whose Retry-After header is honoured.
RETRY_AFTER_STATUSES = (429, 503)
#: 4xx statuses that mean "try again later" rather than "never send this".
RETRYABLE_CLIENT_ERRORS = (408, 425, 429)
#: Characters of a failing answer kept in the attempt's error, to help debug the receiver.
ERROR_EXCERPT_CHARS = 200


class Outcome(str, enum.Enum):
    """What an attempt's result means for the event."""

    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"          # connection error, timeout, 3xx, 408, 425, 429, 5xx
    GONE = "gone"            # 410: the receiver asks never to be called again
    REJECTED = "rejected"    # any other 4xx, or a URL refused by policy: not retried


@dataclass(frozen=True)
class AttemptResult:
    """The outcome of one HTTP attempt."""

    outcome: Outcome
    status_code: int | None
    latency_ms: float
    error: str | None = None
    retry_after_seconds: float | None = None


def _guarded(connection_class: type[HTTPConnection], policy: AddressPolicy) -> type:
    """`connection_class` that resolves its host itself and connects only to addresses `policy`
    allows, checked before connecting: a refused address is never connected to, so whether
    something listens there cannot be told from the attempt's error."""

    class GuardedConnection(connection_class):  # type: ignore[misc, valid-type]
        def _new_conn(self) -> Any:
            name = self._dns_host
            try:
                addresses = policy.allowed_addresses(name, self.port,
                                                     f"connection to {self.host}:{self.port}")
            except UnresolvableWebhookHost as error:
                raise NewConnectionError(self, str(error)) from None
            failure: Exception | None = None
            for address in addresses:
                # urllib3 connects to _dns_host; TLS still checks the certificate of the name.
                self._dns_host = address
                try:
                    return super()._new_conn()
                except (NewConnectionError, ConnectTimeoutError) as error:
                    failure = error
                finally:
                    self._dns_host = name
            assert failure is not None, "a host that resolves has an address"
            raise failure

    GuardedConnection.__name__ = f"Guarded{connection_class.__name__}"
    return GuardedConnection


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections check the address they reach against a policy."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        super().__init__(pool_connections=POOL_MAXSIZE, pool_maxsize=POOL_MAXSIZE, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http_pool = type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {
            "ConnectionCls": _guarded(HTTPConnection, self.policy)})
        https_pool = type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {
            "ConnectionCls": _guarded(HTTPSConnection, self.policy)})
        self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}


_sessions: dict[tuple[int, AddressPolicy], requests.Session] = {}
_sessions_lock = threading.Lock()


def session_for(policy: AddressPolicy) -> requests.Session:
    """This process's session for `policy` (a forked child gets its own, not its parent's)."""
    key = (os.getpid(), policy)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = requests.Session()
            # Proxies and .netrc from the environment must not reroute or decorate webhooks.
            session.trust_env = False
            adapter = GuardedAdapter(policy)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = USER_AGENT
            _sessions[key] = session
        return session


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP date); None if unusable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _read_capped(response: requests.Response, max_bytes: int, deadline: float) -> bytes:
    """Up to `max_bytes` of the answer, read before `deadline` (monotonic); the rest is dropped."""
    kept = bytearray()
    for chunk in response.iter_content(chunk_size=8192):
        kept += chunk
        if len(kept) > max_bytes or time.monotonic() > deadline:
            break
    return bytes(kept[:max_bytes])


def classify(status_code: int) -> Outcome:
    """What an HTTP status means for the delivery."""
    if 200 <= status_code < 300:
        return Outcome.DELIVERED
    if status_code == 410:
        return Outcome.GONE
    if 400 <= status_code < 500 and status_code not in RETRYABLE_CLIENT_ERRORS:
        return Outcome.REJECTED
    return Outcome.RETRY


def _connection_failure(error: requests.ConnectionError) -> str:
    """The root cause of a connection error, without the URL (its query may hold a token)."""
    cause: BaseException = error
    while True:
        inner = getattr(cause, "reason", None)
        if inner is None and cause.args and isinstance(cause.args[0], BaseException):
            inner = cause.args[0]
        if not isinstance(inner, BaseException) or inner is cause:
            break
        cause = inner
    # urllib3 prefixes the connection's repr: "HTTPConnection(host=..., port=...): <what>".
    return f"connection failed: {str(cause).split('): ', 1)[-1]}"


def _failure_text(response: requests.Response, excerpt: bytes) -> str:
    if 300 <= response.status_code < 400:
        target = response.headers.get("Location")
        where = f" to {display_url(target)}" if target else ""
        return f"HTTP {response.status_code}: redirect{where} not followed"
    text = excerpt[:ERROR_EXCERPT_CHARS].decode("utf-8", "replace").strip()
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
         max_response_bytes: int, policy: AddressPolicy) -> AttemptResult:
    """POST `body` (JSON) to `url` once and classify the outcome; never raises for HTTP trouble."""
    started = time.monotonic()

    def elapsed_ms() -> float:
        return round((time.monotonic() - started) * 1000.0, 1)

    try:
        response = session_for(policy).post(
            url, data=body, headers={"Content-Type": "application/json", **headers},
            timeout=(timeout, timeout), allow_redirects=False, stream=True)
    except UnsafeWebhookURL as refused:
        return AttemptResult(Outcome.REJECTED, None, elapsed_ms(), str(refused))
    except requests.Timeout:
        return AttemptResult(Outcome.RETRY, None, elapsed_ms(), f"timed out after {timeout:g} s")
    except requests.ConnectionError as error:
        return AttemptResult(Outcome.RETRY, None, elapsed_ms(), _connection_failure(error))
    except requests.RequestException as error:
        return AttemptResult(Outcome.REJECTED, None, elapsed_ms(),
                             f"request failed: {type(error).__name__}")
    try:
        excerpt = _read_capped(response, max_response_bytes, started + timeout)
    except requests.RequestException:
        excerpt = b""  # the status line already decided the outcome; the answer is only a hint
    finally:
        response.close()
    outcome = classify(response.status_code)
    retry_after = (parse_retry_after(response.headers.get("Retry-After"))
                   if response.status_code in RETRY_AFTER_STATUSES else None)
    error = None if outcome is Outcome.DELIVERED else _failure_text(response, excerpt)
    return AttemptResult(outcome, response.status_code, elapsed_ms(), error, retry_after)
