"""What a RabbitMQ (AMQP 0-9-1) broker holds, asked over plain AMQP (no management plugin).

- **Depth**: a passive ``queue.declare`` answers the messages ready in a queue (taken by no
  consumer), as cheaply as a Redis ``LLEN``.
- **Which runs wait**: AMQP has no way to look at a message without taking it, so the view takes
  the oldest ones with ``basic.get`` on a channel of its own, reads their run ids and closes the
  channel: RabbitMQ puts every message taken and not acknowledged back where it was. While the
  view holds them (milliseconds), workers are handed the messages behind them; that is why only
  the lost-message recovery asks, and ``comfyq queues`` and the metrics read the waiting runs from
  comfyq's own queued-runs index instead.
- **Held messages**: RabbitMQ gives a message a consumer took and has not acknowledged back to
  the queue as soon as that consumer's connection or channel closes (a worker killed, a host lost
  past the heartbeat), so no message stays held for a dead worker: every message of a run that
  is not in its queue is held by a live worker that is about to claim it, and
  :meth:`AmqpTransportView.held_run_ids` has nothing to add.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from amqp.exceptions import AMQPError, NotFound
from kombu import Connection
from kombu.exceptions import KombuError

from comfyq.errors import BrokerUnavailable


class AmqpTransportView:
    """Reads what RabbitMQ holds; takes messages only to read them, and always gives them back.

    :param url: the broker's ``amqp://`` URL.
    :param timeout: seconds a connect may take (None: kombu's default).
    """

    #: Listing a queue's runs takes its messages for a moment (see the module's docstring).
    lists_by_taking = True

    def __init__(self, url: str, timeout: float | None = None) -> None:
        self.url = url
        self.timeout = timeout

    @contextlib.contextmanager
    def _channel(self) -> Iterator[Any]:
        try:
            with Connection(self.url, connect_timeout=self.timeout) as connection:
                channel = connection.channel()
                try:
                    yield channel
                finally:
                    with contextlib.suppress(Exception):  # closed by the broker already
                        channel.close()
        except (OSError, AMQPError, KombuError) as error:
            raise BrokerUnavailable(self.url, error) from error

    @staticmethod
    def _ready(channel: Any, queue: str) -> int:
        try:
            return channel.queue_declare(queue, passive=True).message_count
        except NotFound:  # no worker declared it yet: nothing was ever published to it
            return 0

    def queue_depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (taken by no worker yet)."""
        with self._channel() as channel:
            return self._ready(channel, queue)

    def waiting_run_ids(self, queue: str, oldest: int | None = None) -> list[str]:
        """Run ids of the messages ready in ``queue``, in the order workers would get them;
        only the first ``oldest`` when given."""
        return self.waiting(queue, oldest)[1]

    def waiting(self, queue: str, oldest: int | None = None) -> tuple[int, list[str]]:
        """How many messages are ready in ``queue``, and the run ids of the first ``oldest`` of
        them (all when None), taken and given back on one channel."""
        with self._channel() as channel:
            count = self._ready(channel, queue)
            run_ids: list[str] = []
            for _ in range(count if oldest is None else min(count, oldest)):
                message = channel.basic_get(queue, no_ack=False)
                if message is None:
                    break
                run_id = message_run_id_of(message)
                if run_id:
                    run_ids.append(run_id)
            # Closing the channel (the context's exit) gives every taken message back.
            return count, run_ids

    def held_run_ids(self, since: float) -> set[str]:
        """None: RabbitMQ holds no message for a consumer that is gone (see the module)."""
        return set()


def message_run_id_of(message: Any) -> str | None:
    """The run id a message taken with ``basic.get`` carries (Celery's ``id`` header)."""
    run_id = (message.headers or {}).get("id")
    return run_id if isinstance(run_id, str) else None
