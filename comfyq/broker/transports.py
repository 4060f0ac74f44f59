"""Which kind of broker a URL names, and the view of what that broker holds."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from comfyq.broker.amqp_transport import AmqpTransportView
    from comfyq.broker.redis_transport import RedisTransportView

#: URL schemes kombu serves with its AMQP 0-9-1 transport (RabbitMQ).
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def is_amqp(url: str) -> bool:
    """Whether ``url`` names an AMQP broker (RabbitMQ) rather than Redis."""
    return urlsplit(url).scheme in AMQP_SCHEMES


def transport_view(url: str, timeout: float | None) -> AmqpTransportView | RedisTransportView:
    """The view of what the broker at ``url`` holds: queue depths, waiting and held runs."""
    if is_amqp(url):
        from comfyq.broker.amqp_transport import AmqpTransportView

        return AmqpTransportView(url, timeout)
    from comfyq.broker.redis_transport import RedisTransportView
    from comfyq.redis.connection import redis_client

    return RedisTransportView(redis_client(url, timeout=timeout))
