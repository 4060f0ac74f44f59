"""The Celery configuration every comfyq process shares, derived from :class:`Settings`."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from comfyq.broker.names import CALLBACKS_QUEUE, MAINTENANCE_QUEUE, gpu_queue
from comfyq.broker.priorities import MAX_PRIORITY
from comfyq.broker.transports import is_amqp
from comfyq.redis_urls import is_sentinel, parse_sentinel_url
from comfyq.settings import Settings


def declared_queue(name: str, arguments: dict[str, Any] | None = None) -> Queue:
    """Queue ``name`` on a direct exchange of its own, bound by its own name; durable, like its
    exchange (kombu's default), so it and its persistent messages outlive a broker restart.

    Without an exchange, kombu binds every queue to the default one (the callbacks queue's, as
    ``task_default_queue``), which the worker banner then shows for each GPU queue too.
    """
    return Queue(name, Exchange(name, type="direct"), routing_key=name,
                 queue_arguments=arguments)


def gpu_queue_arguments(settings: Settings) -> dict[str, Any] | None:
    """RabbitMQ arguments of a GPU queue: message priorities 0 to ``MAX_PRIORITY``.

    Classic queues, not quorum ones: a quorum queue knows two priorities at most (none before
    RabbitMQ 3.13), and RabbitMQ fixes a queue's arguments when it is first declared, so the
    choice is made once, here. kombu's Redis transport takes no arguments.
    """
    return {"x-max-priority": MAX_PRIORITY} if is_amqp(settings.effective_broker_url) else None


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's options for the broker's transport; each line says why."""
    url = settings.effective_broker_url
    if is_amqp(url):
        # Publisher confirms: a submit returns only once RabbitMQ has the message (on disk,
        # since messages are persistent and queues durable), so an accepted run is not lost.
        return {"confirm_publish": True}
    # Through Redis Sentinel, kombu asks the sentinels for this master (and asks again after
    # a failover).
    sentinel = {"master_name": parse_sentinel_url(url).master} if is_sentinel(url) else {}
    return {**sentinel,
        # Redis redelivers unacked messages after this; it must outlast the longest run.
        "visibility_timeout": max(1, int(settings.visibility_timeout_seconds)),
        # Look for messages past their visibility timeout often enough for that timeout.
        "unacked_restore_interval": max(1, min(10, int(settings.visibility_timeout_seconds / 4))),
        "unacked_restore_throttle": 1,
        # Retry a publish through short Redis hiccups instead of failing the submit.
        "max_retries": 5,
    }


def kombu_broker_url(url: str) -> str:
    """The broker URL as kombu reads it: a ``redis+sentinel://`` one in kombu's own form."""
    return parse_sentinel_url(url).kombu_url() if is_sentinel(url) else url


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for long GPU runs; each line says why."""
    gpu_arguments = gpu_queue_arguments(settings)
    queues = [*(declared_queue(gpu_queue(gpu), gpu_arguments) for gpu in settings.gpu_types),
              declared_queue(CALLBACKS_QUEUE), declared_queue(MAINTENANCE_QUEUE)]
    return {
        "broker_url": kombu_broker_url(settings.effective_broker_url),
        # Ack after the run ends, so a run whose worker dies mid-way is delivered again.
        "task_acks_late": True,
        # A pool process killed mid-run (OOM, SIGKILL) puts its message back on the queue.
        "task_reject_on_worker_lost": True,
        # Reserve one message at a time: a GPU worker never hoards runs another GPU could start
        # (on RabbitMQ: a prefetch count of 1 per GPU worker, whose pool has one process).
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport_options(settings),
        # Task events on, so Flower sees every task as workers receive, start and finish it.
        "worker_send_task_events": True,
        # No task-sent events: each would be a second publish per submit (half the submit rate);
        # Flower lists a run once a worker receives it, and queue depth is read from the broker.
        "task_send_sent_event": False,
        # Queues are declared here; a typo in a queue name fails instead of creating a dead queue.
        "task_queues": queues,
        "task_create_missing_queues": False,
        "task_default_queue": CALLBACKS_QUEUE,
        # Results live in the run record, not in a Celery result backend.
        "task_ignore_result": True,
        # Show tasks as STARTED in Flower while a run executes, not only PENDING then SUCCESS.
        "task_track_started": True,
        # Keep retrying the broker at start-up instead of exiting when Redis comes up late.
        "broker_connection_retry_on_startup": True,
        # JSON only: run ids and plain data travel, never pickled objects.
        "task_serializer": "json",
        "accept_content": ["json"],
        # Leave the application's logging alone; comfyq only adds its own loggers.
        "worker_hijack_root_logger": False,
        # Fail a publish to an unreachable broker within seconds, not minutes.
        "broker_connection_timeout": 5,
    }


def publisher_app(settings: Settings) -> Celery:
    """A Celery app that only publishes (no task modules): what producers need."""
    app = Celery("comfyq", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
