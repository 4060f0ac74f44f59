"""Webhook settings, read from `COMFYQ_` environment variables like the rest of comfyq.

| Variable (prefix `COMFYQ_`)           | Default       | Meaning                               |
|---------------------------------------|---------------|---------------------------------------|
| `WEBHOOK_SECRETS`                     | none (note 1) | `whsec_...` signing secrets (note 2)  |
| `WEBHOOK_SCHEDULE`                    | note 3        | seconds before each attempt           |
| `WEBHOOK_JITTER`                      | `0.1`         | waits vary by +/- this fraction       |
| `WEBHOOK_TIMEOUT_SECONDS`             | `15`          | limit of one attempt, answer included |
| `WEBHOOK_MAX_RESPONSE_BYTES`          | `65536`       | most bytes of an answer read          |
| `WEBHOOK_ALLOW_LOOPBACK`              | `false`       | allow 127.0.0.0/8 and ::1 receivers   |
| `WEBHOOK_ALLOW_PRIVATE`               | `false`       | allow private, link-local (note 4)    |
| `WEBHOOK_ALLOWED_NETWORKS`            | none          | CIDRs allowed though not public       |
| `WEBHOOK_PROGRESS_INTERVAL_SECONDS`   | `0.25`        | least gap between progress sends      |
| `WEBHOOK_MAX_RETRY_AFTER_SECONDS`     | `86400`       | cap on an honoured `Retry-After`      |
| `WEBHOOK_CLAIM_TIMEOUT_SECONDS`       | `300`         | unstarted hand-off re-sent after      |
| `WEBHOOK_DELIVERED_RETENTION_SECONDS` | `86400`       | delivered events kept this long       |

1. With no secret configured, one is generated on first use and kept in Redis (key
   `comfyq:webhooks:secret`), so signing works with no setup; `comfyq webhooks secret` prints
   it for the receiver. Configure your own in production: flushing Redis would change that one.
2. Comma-separated or a JSON list. Each delivery carries one signature per secret: to rotate,
   put the new secret first and keep the old one after it until every receiver has the new one.
3. Default `0,5,300,1800,7200,18000,36000,36000`: immediately, then after 5 s, 5 min, 30 min,
   2 h, 5 h, 10 h and 10 h (about 28 h in all). The list's length is the number of attempts; an
   event still failing after the last is dead-lettered, and kept until it is redelivered
   (`comfyq webhooks redeliver RUN_ID`). A `Retry-After` can only lengthen a wait.
4. 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, 169.254/16, fe80::/10 and the like. Cloud
   metadata (169.254.169.254, fd00:ec2::254, metadata.google.internal), multicast, unspecified
   and reserved addresses are refused whatever is set. URLs are checked at submit and again
   before every attempt, and each connection checks the addresses it is about to connect to
   (DNS can change). `WEBHOOK_ALLOWED_NETWORKS` (comma-separated or a JSON list, e.g.
   `10.20.0.0/16,fd00:1::/64`) allows just those networks for private receivers, rather than
   every loopback or private address.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, IPvAnyNetwork, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from comfyq.settings import _split_floats, _split_list, environment_settings
from comfyq.webhooks.safety import AddressPolicy

#: Every secret starts with this, as Standard Webhooks prescribes.
SECRET_PREFIX = "whsec_"
#: Shortest secret key accepted (Standard Webhooks asks for 24 to 64 bytes; 16 still resists).
MIN_SECRET_BYTES = 16

DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)

SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_list)]
FloatList = Annotated[list[float], NoDecode, BeforeValidator(_split_floats)]


def _split_networks(value: Any) -> Any:
    """CIDRs as networks; host bits are dropped (``10.0.0.1/8`` is ``10.0.0.0/8``)."""
    items = _split_list(value)
    if not isinstance(items, list):
        return items
    try:
        return [ipaddress.ip_network(item, strict=False) if isinstance(item, str) else item
                for item in items]
    except ValueError as error:
        raise ValueError(f"each entry must be a network in CIDR form, like 10.20.0.0/16 "
                         f"({error})") from None


NetworkList = Annotated[list[IPvAnyNetwork], NoDecode, BeforeValidator(_split_networks)]


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret; ValueError saying what is wrong."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {SECRET_PREFIX!r} must be base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"key is {len(key)} bytes; at least {MIN_SECRET_BYTES} are needed")
    return key


class WebhookSettings(BaseSettings):
    """How webhooks are signed, retried and guarded; see the module docstring's table."""

    # Errors never echo the input: it may be a secret.
    model_config = SettingsConfigDict(env_prefix="COMFYQ_", extra="ignore",
                                      hide_input_in_errors=True)

    webhook_secrets: SecretList = Field(default_factory=list)
    webhook_schedule: FloatList = Field(default_factory=lambda: list(DEFAULT_SCHEDULE))
    webhook_jitter: float = Field(0.1, ge=0, lt=1)
    webhook_timeout_seconds: float = Field(15.0, gt=0)
    webhook_max_response_bytes: int = Field(65536, ge=0)
    webhook_allow_loopback: bool = False
    webhook_allow_private: bool = False
    webhook_allowed_networks: NetworkList = Field(default_factory=list)
    webhook_progress_interval_seconds: float = Field(0.25, ge=0)
    webhook_max_retry_after_seconds: float = Field(86400.0, ge=0)
    webhook_claim_timeout_seconds: float = Field(300.0, gt=0)
    webhook_delivered_retention_seconds: float = Field(86400.0, gt=0)

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets_are_whsec(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        for index, secret in enumerate(secrets):
            try:
                secret_key_bytes(secret.get_secret_value())
            except ValueError as problem:
                # The message names the position, never the value: it is a secret.
                raise ValueError(f"webhook_secrets[{index}]: {problem}") from None
        return secrets

    @field_validator("webhook_schedule")
    @classmethod
    def _schedule_is_usable(cls, schedule: list[float]) -> list[float]:
        if not schedule:
            raise ValueError("needs at least one entry (the wait before the first attempt)")
        negative = [delay for delay in schedule if delay < 0]
        if negative:
            raise ValueError(f"waits must be >= 0 seconds, got {negative[0]}")
        return schedule

    @property
    def address_policy(self) -> AddressPolicy:
        """Which addresses webhooks may be sent to, as these settings say."""
        return AddressPolicy(self.webhook_allow_loopback, self.webhook_allow_private,
                             tuple(self.webhook_allowed_networks))

    @property
    def lease_seconds(self) -> float:
        """How long one attempt may hold its event before it is presumed lost with its worker."""
        return self.webhook_timeout_seconds * 2 + 30.0

    def with_overrides(self, **overrides: Any) -> WebhookSettings:
        """A copy with some settings replaced and validated (used by tests and benchmarks)."""
        return WebhookSettings.model_validate({**self.model_dump(), **overrides})


@functools.cache
def get_webhook_settings() -> WebhookSettings:
    """The process-wide webhook settings, read from the environment on first use.

    :raises SettingsError: a variable is bad (each named, with what is wrong, never its value).
    """
    return environment_settings(WebhookSettings)


def reset_webhook_settings() -> None:
    """Forget the cached settings so the next call re-reads the environment."""
    get_webhook_settings.cache_clear()
