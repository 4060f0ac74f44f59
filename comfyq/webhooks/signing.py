"""Standard Webhooks signatures (https://www.standardwebhooks.com), both sides of the wire.

Every delivery carries three headers:

- `webhook-id`: the event's id, the same on every retry, so a receiver can drop duplicates;
- `webhook-timestamp`: Unix seconds of this attempt (new on each retry), so a receiver can
  refuse replays older than a few minutes;
- `webhook-signature`: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one per configured
  secret, space-separated, so a receiver holding either the old or the new secret accepts
  deliveries while a secret is rotated.

A receiver in Python checks a delivery with :func:`verify_delivery` (or the `standardwebhooks`
package directly)::

    from comfyq.webhooks.signing import verify_delivery

    payload = verify_delivery(secret, request.headers, request.body)  # raises if forged/stale
"""

from __future__ import annotations

import base64
import json
import secrets as random_source
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from comfyq.webhooks.settings import SECRET_PREFIX, secret_key_bytes

#: Bytes of key in a generated secret (Standard Webhooks recommends 24 to 64).
GENERATED_SECRET_BYTES = 32
#: A receiver refuses deliveries whose timestamp is further than this from its clock.
TIMESTAMP_TOLERANCE_SECONDS = 300


class WebhookSignatureError(ValueError):
    """A delivery failed verification: missing headers, no matching signature, or stale."""


def generate_secret() -> str:
    """A new random signing secret, `whsec_<base64 of 32 random bytes>`."""
    key = random_source.token_bytes(GENERATED_SECRET_BYTES)
    return SECRET_PREFIX + base64.b64encode(key).decode("ascii")


def _reveal(secret: SecretStr | str) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def _signer(secret: SecretStr | str) -> Webhook:
    value = _reveal(secret)
    secret_key_bytes(value)  # a clear ValueError for a malformed secret, before any use
    return Webhook(value)


def signature_headers(secrets: Sequence[SecretStr | str], event_id: str, body: bytes,
                      timestamp: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt of delivering `body`.

    :param secrets: signing secrets; each one adds a signature (the first is the current one).
    :param event_id: the event's id, identical on every attempt.
    :param body: the exact bytes that will be sent.
    :param timestamp: Unix seconds of the attempt; now when None.
    """
    if not secrets:
        raise ValueError("secrets: at least one signing secret is needed")
    seconds = int(time.time() if timestamp is None else timestamp)
    # standardwebhooks' sign() reads its datetime as UTC whatever its tzinfo says, so it gets
    # an aware UTC datetime built from the same integer seconds the header carries.
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    text = body.decode("utf-8")
    signatures = " ".join(_signer(secret).sign(event_id, moment, text) for secret in secrets)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": signatures,
    }


def verify_delivery(secret: SecretStr | str, headers: Mapping[str, str],
                    body: bytes | str) -> dict:
    """Check a delivery's signature and freshness; returns its JSON body as a dict.

    :param secret: the receiver's `whsec_...` secret.
    :param headers: the request headers (any case).
    :param body: the raw request body, exactly as received.
    :raises WebhookSignatureError: headers missing, no signature matching this secret, or a
        timestamp more than five minutes from this machine's clock.
    """
    signer = _signer(secret)
    try:
        signer.verify(body, dict(headers), json_parse=False)
    except WebhookVerificationError as error:
        raise WebhookSignatureError(f"webhook delivery refused: {error}") from None
    except ValueError:  # a signature header that is not "v1,<base64>"
        raise WebhookSignatureError(
            "webhook delivery refused: malformed webhook-signature header") from None
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise WebhookSignatureError("webhook delivery refused: the body is not a JSON object")
    return payload
