"""Which secrets sign deliveries: the configured ones, else one generated for this deployment.

Signing is never skipped, so a receiver can always verify; and a laptop needs no setup, so when
`COMFYQ_WEBHOOK_SECRETS` is empty a secret is generated once and kept in Redis, where every
worker of the deployment finds the same one (`comfyq webhooks secret` prints it). Whoever can
read that Redis can read the secret, but they could forge runs and events there anyway.
"""

from __future__ import annotations

import redis
from pydantic import SecretStr

from comfyq.redis import keys
from comfyq.webhooks.settings import WebhookSettings
from comfyq.webhooks.signing import generate_secret


def deployment_secret(client: redis.Redis) -> SecretStr:
    """The secret generated for this deployment, created on first use (once, atomically)."""
    value = client.get(keys.WEBHOOKS_SECRET)
    if value is None:
        client.set(keys.WEBHOOKS_SECRET, generate_secret(), nx=True)
        value = client.get(keys.WEBHOOKS_SECRET)
    return SecretStr(value)


def signing_secrets(client: redis.Redis, settings: WebhookSettings) -> list[SecretStr]:
    """The secrets that sign each delivery, the current one first."""
    if settings.webhook_secrets:
        return list(settings.webhook_secrets)
    return [deployment_secret(client)]
