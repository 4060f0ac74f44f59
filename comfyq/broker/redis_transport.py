"""What kombu's Redis transport holds: queues as lists, unacknowledged messages in a hash.

A queue is one Redis list per priority step, named after it: producers ``LPUSH`` and workers
``BRPOP``, so the oldest message is at the right end. A message a worker took and has not
acknowledged sits in the ``unacked`` hash (delivery tag -> ``[message, exchange, routing key]``),
its tag in the ``unacked_index`` sorted set scored by delivery time.
"""

from __future__ import annotations

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel

from comfyq.broker.messages import message_run_ids

#: kombu's Redis hash of delivered but unacknowledged messages (delivery tag -> message).
UNACKED_HASH = Channel.unacked_key
#: kombu's sorted set of the same delivery tags, scored by when they were delivered.
UNACKED_INDEX = Channel.unacked_index_key


def queue_lists(queue: str) -> list[str]:
    """The Redis lists holding ``queue``'s messages: the queue itself, then one per priority."""
    return [queue if not step else f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS]


class RedisTransportView:
    """Reads what kombu's Redis transport holds, without taking anything.

    :param client: a client of the broker's Redis (``decode_responses=True``).
    """

    #: Listing a queue's runs reads its lists and takes nothing.
    lists_by_taking = False

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (taken by no worker yet)."""
        pipeline = self.client.pipeline(transaction=False)
        for name in queue_lists(queue):
            pipeline.llen(name)
        return sum(pipeline.execute())

    def waiting_run_ids(self, queue: str, oldest: int | None = None) -> list[str]:
        """Run ids of the messages waiting in ``queue``, oldest first; only the ``oldest`` few
        of each priority list when given."""
        return self.waiting(queue, oldest)[1]

    def waiting(self, queue: str, oldest: int | None = None) -> tuple[int, list[str]]:
        """How many messages wait in ``queue``, and the run ids of the ``oldest`` few of each
        priority list (all when None), oldest first; in one round trip."""
        start = 0 if oldest is None else -oldest
        pipeline = self.client.pipeline(transaction=False)
        for name in queue_lists(queue):
            pipeline.llen(name)
            pipeline.lrange(name, start, -1)
        replies = pipeline.execute()
        run_ids: list[str] = []
        for raw in replies[1::2]:
            run_ids += message_run_ids(reversed(raw))
        return sum(replies[::2]), run_ids

    def held_run_ids(self, since: float) -> set[str]:
        """Run ids of messages a worker took, and has not acknowledged, after ``since``."""
        tags = self.client.zrangebyscore(UNACKED_INDEX, since, "+inf")
        if not tags:
            return set()
        return set(message_run_ids(v for v in self.client.hmget(UNACKED_HASH, tags) if v))
