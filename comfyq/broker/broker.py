"""The broker as comfyq uses it: publish runs and webhook deliveries, look at what it holds."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from comfyq.broker.names import CALLBACKS_QUEUE, DELIVER_WEBHOOK_TASK, EXECUTE_RUN_TASK, gpu_queue
from comfyq.broker.priorities import DEFAULT_PRIORITY, message_priority
from comfyq.broker.run_messages import RunMessages
from comfyq.broker.transports import is_amqp, transport_view
from comfyq.redis_urls import SERVER_SCHEMES
from comfyq.settings import Settings

if TYPE_CHECKING:
    import redis
    from celery import Celery

    from comfyq.broker.amqp_transport import AmqpTransportView
    from comfyq.broker.redis_transport import RedisTransportView

#: kombu's waits between publish retries: the first, the growth of each next one, the longest.
PUBLISH_RETRY_INTERVALS = {"interval_start": 0.1, "interval_step": 0.5, "interval_max": 1.0}


def publish_retry_policy(seconds: float) -> dict[str, float]:
    """kombu's retry policy that keeps publishing through a broker outage for about ``seconds``."""
    retries, waited = 0, 0.0
    while waited < seconds:
        waited += min(PUBLISH_RETRY_INTERVALS["interval_max"],
                      PUBLISH_RETRY_INTERVALS["interval_start"]
                      + retries * PUBLISH_RETRY_INTERVALS["interval_step"])
        retries += 1
    return {"max_retries": retries, **PUBLISH_RETRY_INTERVALS}


class Broker:
    """Publishing to, and reading from, the broker of ``settings``.

    :param settings: where the broker is (``effective_broker_url``) and which queues exist.
    :param celery_app: the app to publish with; a publish-only app of ``settings`` by default.
    :param timeout: seconds a look at the broker may take (None: no limit).
    """

    def __init__(self, settings: Settings, celery_app: Celery | None = None, *,
                 timeout: float | None = None) -> None:
        self.settings = settings
        self.timeout = timeout
        self.retry_policy = publish_retry_policy(settings.outage_retry_seconds)
        if celery_app is not None:
            self.celery_app = celery_app

    @functools.cached_property
    def celery_app(self) -> Celery:
        """The Celery app runs are published with (built on first use: importing Celery takes
        a noticeable part of a second, which reads like ``comfyq queues`` need not pay)."""
        from comfyq.broker.celery_config import publisher_app

        return publisher_app(self.settings)

    @functools.cached_property
    def is_amqp(self) -> bool:
        """Whether the broker is RabbitMQ (AMQP) rather than Redis."""
        return is_amqp(self.settings.effective_broker_url)

    def publish_run(self, run_id: str, gpu_type: str, priority: int = DEFAULT_PRIORITY) -> None:
        """Put run ``run_id`` on its GPU type's queue (again, when the reaper re-queues it),
        ahead of the waiting runs of a lower ``priority``.

        The task id is the run id, so Flower shows runs by their id; a duplicate message is
        harmless, since a worker claims a run only once at a time and never after it is final.
        """
        self.celery_app.send_task(EXECUTE_RUN_TASK, args=[run_id], task_id=run_id,
                                  queue=gpu_queue(gpu_type), retry=True,
                                  retry_policy=self.retry_policy,
                                  priority=message_priority(priority, self.is_amqp))

    def shares_redis_with(self, client: redis.Redis) -> bool:
        """Whether the broker is kombu's Redis transport on the same server and database as
        ``client``, so a run's message can join a transaction of ``client``'s."""
        return _redis_location(self.settings.effective_broker_url) == _client_location(client)

    @functools.cached_property
    def _run_messages(self) -> RunMessages:
        return RunMessages(self.celery_app)

    def run_message(self, run_id: str, gpu_type: str,
                    priority: int = DEFAULT_PRIORITY) -> tuple[str, str]:
        """The Redis list and message text that put run ``run_id`` on its GPU type's queue, as
        :meth:`publish_run` would push them (when :meth:`shares_redis_with` the records)."""
        return self._run_messages.message(run_id, gpu_queue(gpu_type),
                                          message_priority(priority, amqp=False))

    def send_webhook_delivery(self, event_id: str) -> None:
        """Hand one delivery attempt of webhook event ``event_id`` to a callback worker."""
        self.celery_app.send_task(DELIVER_WEBHOOK_TASK, args=[event_id], queue=CALLBACKS_QUEUE)

    @functools.cached_property
    def transport(self) -> AmqpTransportView | RedisTransportView:
        """What the broker holds: queue depths, waiting and unacknowledged messages."""
        return transport_view(self.settings.effective_broker_url, self.timeout)

    @property
    def lists_by_taking(self) -> bool:
        """Whether listing a queue's runs takes its messages for a moment (RabbitMQ), so that
        frequent readers (``comfyq queues``, metrics) should list waiting runs another way."""
        return self.transport.lists_by_taking

    def queue_depth(self, gpu_type: str) -> int:
        """Runs waiting in ``gpu_type``'s queue, taken by no worker yet."""
        return self.transport.queue_depth(gpu_queue(gpu_type))

    def waiting_run_ids(self, gpu_type: str, oldest: int | None = None) -> list[str]:
        """Run ids waiting in ``gpu_type``'s queue, oldest first (only ``oldest`` of them)."""
        return self.transport.waiting_run_ids(gpu_queue(gpu_type), oldest)

    def waiting(self, gpu_type: str, oldest: int | None = None) -> tuple[int, list[str]]:
        """Messages in ``gpu_type``'s queue, and the run ids of the ``oldest`` of them (all when
        None), oldest first; the two agree, read in one round trip."""
        return self.transport.waiting(gpu_queue(gpu_type), oldest)

    def held_run_ids(self, since: float) -> set[str]:
        """Run ids of messages a worker took after ``since`` and has not acknowledged, where the
        broker could keep them from a worker that is gone (Redis; RabbitMQ gives them back)."""
        return self.transport.held_run_ids(since)


def _redis_location(url: str) -> tuple | None:
    """Server and database of a Redis URL of kombu's plain Redis transport, else None."""
    from redis.connection import parse_url

    if urlsplit(url).scheme not in SERVER_SCHEMES:
        return None
    return _server_and_database(parse_url(url))


def _client_location(client: redis.Redis) -> tuple:
    return _server_and_database(client.connection_pool.connection_kwargs)


def _server_and_database(options: Mapping[str, Any]) -> tuple:
    """``(host, port, socket path, database)`` of redis-py connection options."""
    return (options.get("host", "localhost"), int(options.get("port", 6379)),
            options.get("path"), int(options.get("db", 0)))
