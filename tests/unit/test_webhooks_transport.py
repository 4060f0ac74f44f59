"""One HTTP attempt against real receivers on 127.0.0.1: outcomes, caps, keep-alive, guard."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from email.utils import formatdate

import pytest

from comfyq.webhooks.receiver import Reply, SigningReceiver, always
from comfyq.webhooks.safety import AddressPolicy
from comfyq.webhooks.signing import generate_secret, signature_headers
from comfyq.webhooks.transport import Outcome, parse_retry_after, post

SECRET = generate_secret()
BODY = b'{"run_id":"r","status":"running","seq":1}'
LOOPBACK_OK = AddressPolicy(allow_loopback=True)


def attempt(url: str, *, timeout: float = 2.0, max_bytes: int = 1024,
            policy: AddressPolicy = LOOPBACK_OK):
    headers = signature_headers([SECRET], "msg_t", BODY)
    return post(url, BODY, headers, timeout=timeout, max_response_bytes=max_bytes, policy=policy)


@pytest.fixture
def receiver_for() -> Iterator:
    started: list[SigningReceiver] = []

    def start(reply: Reply) -> SigningReceiver:
        receiver = SigningReceiver(SECRET, always(reply)).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.DELIVERED), (204, Outcome.DELIVERED), (299, Outcome.DELIVERED),
    (500, Outcome.RETRY), (502, Outcome.RETRY), (503, Outcome.RETRY), (429, Outcome.RETRY),
    (408, Outcome.RETRY), (410, Outcome.GONE),
    (400, Outcome.REJECTED), (401, Outcome.REJECTED), (404, Outcome.REJECTED),
    (422, Outcome.REJECTED),
])
def test_status_codes_are_classified(receiver_for, status: int, outcome: Outcome) -> None:
    receiver = receiver_for(Reply(status, body=b"nope" if status >= 400 else b""))
    result = attempt(receiver.url)
    assert (result.outcome, result.status_code) == (outcome, status)
    assert receiver.received[0].verified
    assert (result.error is None) == (outcome is Outcome.DELIVERED)
    if outcome is not Outcome.DELIVERED:
        assert result.error == f"HTTP {status}: nope"


def test_a_redirect_is_a_failure_and_is_not_followed(receiver_for) -> None:
    elsewhere = receiver_for(Reply(200))
    redirecting = receiver_for(Reply(302, headers={"Location": elsewhere.url + "?t=secret"}))
    result = attempt(redirecting.url)
    assert result.outcome is Outcome.RETRY
    assert result.error == f"HTTP 302: redirect to {elsewhere.url}?... not followed"
    assert elsewhere.received == []


def test_retry_after_is_read_on_429_and_503_only(receiver_for) -> None:
    assert attempt(receiver_for(Reply(429, headers={"Retry-After": "7"})).url
                   ).retry_after_seconds == 7.0
    receiver = receiver_for(Reply(503, headers={"Retry-After": formatdate(
        (until := int(time.time()) + 120), usegmt=True)}))
    before = time.time()
    waited = attempt(receiver.url)
    after = time.time()
    assert until - after <= waited.retry_after_seconds <= until - before
    assert attempt(receiver_for(Reply(500, headers={"Retry-After": "7"})).url
                   ).retry_after_seconds is None


def test_retry_after_parsing() -> None:
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 10) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 + 10) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after(None) is None


def test_connection_refused_and_timeouts_are_retried(receiver_for) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    refused = attempt(f"http://127.0.0.1:{closed_port}/hook?token=abc")
    assert refused.outcome is Outcome.RETRY and refused.status_code is None
    assert refused.error.startswith("connection failed: ") and "Connection refused" in refused.error
    assert "token" not in refused.error

    # The answer would come, 200, after 3 s: a retry saying it timed out means it was not
    # waited for.
    slow = receiver_for(Reply(200, delay=3.0))
    timed_out = attempt(slow.url, timeout=0.3)
    assert (timed_out.outcome, timed_out.error) == (Outcome.RETRY, "timed out after 0.3 s")


def test_an_endless_answer_is_cut_at_the_size_cap(receiver_for) -> None:
    # Reading on until the 5 s timeout would make it a timed-out retry; delivered means the
    # sender stopped reading at the cap.
    endless = receiver_for(Reply(200, endless=True))
    result = attempt(endless.url, timeout=5.0, max_bytes=100_000)
    assert (result.outcome, result.error) == (Outcome.DELIVERED, None)

    failing = receiver_for(Reply(500, body=b"E" * 1_000_000))
    result = attempt(failing.url, max_bytes=1000)
    assert result.outcome is Outcome.RETRY
    assert result.error == "HTTP 500: " + "E" * 200


def test_connections_are_kept_alive_between_attempts(receiver_for) -> None:
    receiver = receiver_for(Reply(200))
    for _ in range(5):
        assert attempt(receiver.url).outcome is Outcome.DELIVERED
    assert len({item.peer for item in receiver.received}) == 1  # one connection, reused
    assert receiver.received[0].headers["User-Agent"].startswith("comfyq-webhooks/")


def test_the_connected_address_is_checked_even_when_the_url_was_not(receiver_for) -> None:
    """DNS rebinding: a URL checked as public that then resolves to loopback is refused."""
    receiver = receiver_for(Reply(200))
    result = attempt(f"http://localhost:{receiver.port}/hook", policy=AddressPolicy())
    assert result.outcome is Outcome.REJECTED
    assert result.error == (f"connection to localhost:{receiver.port} refused: 127.0.0.1 is a "
                            "loopback address (set COMFYQ_WEBHOOK_ALLOW_LOOPBACK=true to allow it)")
    assert receiver.received == []
