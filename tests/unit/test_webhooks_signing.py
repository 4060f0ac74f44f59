"""Signing as a receiver checks it: with the published `standardwebhooks` package."""

from __future__ import annotations

import base64
import json
import time

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from comfyq.webhooks.settings import WebhookSettings
from comfyq.webhooks.signing import (
    WebhookSignatureError,
    generate_secret,
    signature_headers,
    verify_delivery,
)

BODY = json.dumps({"run_id": "r1", "status": "success", "seq": 3}).encode()


def test_generated_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


def test_standardwebhooks_accepts_the_headers() -> None:
    secret = generate_secret()
    before = int(time.time())
    headers = signature_headers([secret], "msg_1", BODY)
    assert headers["webhook-id"] == "msg_1"
    assert before <= int(headers["webhook-timestamp"]) <= time.time()  # signed now
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_timestamp_is_integer_seconds_and_part_of_the_signature() -> None:
    secret = generate_secret()
    headers = signature_headers([secret], "msg_1", BODY, timestamp=time.time() + 0.9)
    assert headers["webhook-timestamp"].isdigit()
    tampered = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, tampered)


def test_every_secret_signs_while_rotating_so_old_and_new_receivers_verify() -> None:
    new, old = generate_secret(), generate_secret()
    headers = signature_headers([new, old], "msg_2", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(BODY, headers)
    assert Webhook(old).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_verify_delivery_returns_the_body_and_refuses_forgery_and_staleness() -> None:
    secret = generate_secret()
    headers = signature_headers([secret], "msg_3", BODY)
    assert verify_delivery(secret, headers, BODY) == json.loads(BODY)
    upper = {name.upper(): value for name, value in headers.items()}
    assert verify_delivery(secret, upper, BODY.decode())["seq"] == 3

    with pytest.raises(WebhookSignatureError, match="No matching signature"):
        verify_delivery(secret, headers, BODY.replace(b"success", b"failed!"))
    with pytest.raises(WebhookSignatureError, match="No matching signature"):
        verify_delivery(generate_secret(), headers, BODY)
    stale = signature_headers([secret], "msg_3", BODY, timestamp=time.time() - 600)
    with pytest.raises(WebhookSignatureError, match="too old"):
        verify_delivery(secret, stale, BODY)
    with pytest.raises(WebhookSignatureError, match="Missing required headers"):
        verify_delivery(secret, {"webhook-id": "msg_3"}, BODY)
    with pytest.raises(WebhookSignatureError, match="malformed webhook-signature"):
        verify_delivery(secret, {**headers, "webhook-signature": "garbage"}, BODY)


def test_bad_secrets_are_refused_naming_their_position_but_not_their_value() -> None:
    good = generate_secret()
    with pytest.raises(ValidationError) as caught:
        WebhookSettings(webhook_secrets=[good, "sk_live_leaky"])
    message = str(caught.value)
    assert "webhook_secrets[1]: must start with 'whsec_'" in message
    assert "leaky" not in message and good not in message
    with pytest.raises(ValueError, match="at least 16"):
        signature_headers(["whsec_" + base64.b64encode(b"short").decode()], "msg", BODY)


def test_secrets_never_show_in_reprs() -> None:
    secret = generate_secret()
    settings = WebhookSettings(webhook_secrets=secret)
    assert secret not in repr(settings) and secret not in str(settings.model_dump())
    assert settings.webhook_secrets[0].get_secret_value() == secret


def test_schedule_and_secrets_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = generate_secret(), generate_secret()
    monkeypatch.setenv("COMFYQ_WEBHOOK_SECRETS", f"{first},{second}")
    monkeypatch.setenv("COMFYQ_WEBHOOK_SCHEDULE", "0,1,2.5")
    settings = WebhookSettings()
    assert [s.get_secret_value() for s in settings.webhook_secrets] == [first, second]
    assert settings.webhook_schedule == [0.0, 1.0, 2.5]
    monkeypatch.setenv("COMFYQ_WEBHOOK_SCHEDULE", "[]")
    with pytest.raises(ValidationError, match="needs at least one entry"):
        WebhookSettings()
