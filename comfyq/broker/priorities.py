"""Run priorities as requests carry them, and as each broker orders its messages.

A run's priority is 0 (the default, what every ComfyDeploy request gets) to ``MAX_PRIORITY``;
a higher one is taken before waiting runs of a lower one on the same GPU type, runs of one
priority first in, first out. RabbitMQ orders by the message's priority itself (queues declared
with ``x-max-priority``). kombu's Redis transport keeps a list per priority step (0, 3, 6, 9 by
default) and serves the *lowest* step first, so the priority is turned around for it, and
priorities in one step (1 to 3, 4 to 6, 7 to 9) share a list.
"""

from __future__ import annotations

from comfyq.models import DEFAULT_RUN_PRIORITY as DEFAULT_PRIORITY
from comfyq.models import MAX_RUN_PRIORITY as MAX_PRIORITY

__all__ = ["DEFAULT_PRIORITY", "MAX_PRIORITY", "message_priority"]


def message_priority(priority: int, amqp: bool) -> int:
    """The message priority that makes the broker (RabbitMQ when ``amqp``) serve a run of ``priority`` in its turn."""
    return priority if amqp else MAX_PRIORITY - priority
