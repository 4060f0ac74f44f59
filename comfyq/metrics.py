"""Prometheus metrics of runs, queues, workers and webhooks, derived from Redis at scrape time.

Nothing in the run's hot path counts anything: each scrape reads what Redis already holds.

- Counters and histograms of runs follow the run index (``keys.RUNS_INDEX``, scored by creation
  time) from where the previous scrape stopped, and re-read the records of runs seen earlier
  that had not finished yet: a run is counted as submitted, started and finished (by status)
  once each, and its queue wait (queued -> started) and duration (started -> ended) are
  observed when it starts and ends. Like any in-process counter they start at zero when the
  exporter starts; runs already queued or executing then are followed to their end.
- Webhook outcomes follow the outbox's delivered and dead-letter indexes the same way.
- Queue depth, the oldest waiting run and workers online are read fresh at every scrape
  (``comfyq.queue_overview``), so they are right even for queues no worker consumes.

Serve them with ``comfyq metrics`` (:func:`serve_metrics`), or inside another web application
with :func:`metrics_asgi_app` or :func:`render_metrics`. Keep one registry per process: the
counters live in it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from comfyq.broker import Broker
from comfyq.models import FINAL_STATUSES
from comfyq.queue_overview import QueueState, queue_states
from comfyq.redis import keys
from comfyq.redis.connection import QUICK_TIMEOUT_SECONDS, redis_client
from comfyq.runs.indexes import RunIndexes
from comfyq.runs.store import RunStore, now
from comfyq.settings import Settings, get_settings

logger = logging.getLogger(__name__)

#: Index entries up to this many seconds older than the newest one seen are read again at the
#: next scrape, so a run recorded late (clock skew between submitting hosts) is still counted.
INDEX_OVERLAP_SECONDS = 30.0
#: Seconds a Redis command of a scrape may take before the scrape reports Redis as down.
REDIS_TIMEOUT_SECONDS = QUICK_TIMEOUT_SECONDS
_FINAL_VALUES = frozenset(status.value for status in FINAL_STATUSES)
_TIMES = ("queued_at", "started_at", "ended_at")
_RUN_FIELDS = ("gpu", *_TIMES)


class IndexFollower:
    """Reports each new member of a sorted set scored by time once, scrape after scrape.

    ``(member, score)`` pairs are remembered for the overlap window, so a member added again
    later with a new score (an event dead-lettered a second time) is a new arrival.
    """

    def __init__(self, key: str, overlap_seconds: float = INDEX_OVERLAP_SECONDS) -> None:
        self.key = key
        self.overlap_seconds = overlap_seconds
        self.cursor: float | None = None
        self._seen: set[tuple[str, float]] = set()

    @property
    def started(self) -> bool:
        return self.cursor is not None

    def start(self, client: redis.Redis, moment: float) -> None:
        """Begin following: what the set holds now is history, not an arrival."""
        self.cursor = moment
        self._seen = set(self._read(client))

    def arrivals(self, client: redis.Redis) -> list[tuple[str, float]]:
        """Members added since the previous call, oldest first."""
        assert self.cursor is not None, "start() first"
        fresh = [item for item in self._read(client) if item not in self._seen]
        self._seen.update(fresh)
        self.cursor = max([self.cursor, *(score for _, score in fresh)])
        horizon = self.cursor - self.overlap_seconds
        self._seen = {item for item in self._seen if item[1] >= horizon}
        return fresh

    def _read(self, client: redis.Redis) -> list[tuple[str, float]]:
        assert self.cursor is not None
        return client.zrangebyscore(self.key, self.cursor - self.overlap_seconds, "+inf",
                                    withscores=True)


def _duration(start: Any, end: Any) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, float(end) - float(start))


@dataclass
class _Followed:
    """A run seen before it finished: which of its counts were already made."""

    submitted_counted: bool
    started_counted: bool


class RunMetrics:
    """Run counters and histograms, brought up to date from the run records at each scrape."""

    def __init__(self, buckets: Iterable[float]) -> None:
        buckets = tuple(buckets)
        self.submitted = Counter("comfyq_runs_submitted", "Runs submitted.", ["gpu_type"],
                                 registry=None)
        self.started = Counter("comfyq_runs_started", "Runs a worker started executing.",
                               ["gpu_type"], registry=None)
        self.finished = Counter("comfyq_runs_finished", "Runs that ended, by final status.",
                                ["gpu_type", "status"], registry=None)
        self.duration = Histogram(
            "comfyq_run_duration_seconds", "Execution time of ended runs (started -> ended).",
            ["gpu_type", "status"], buckets=buckets, registry=None)
        self.queue_wait = Histogram(
            "comfyq_run_queue_wait_seconds", "Time runs waited in their queue (queued -> started).",
            ["gpu_type"], buckets=buckets, registry=None)
        self._index = IndexFollower(keys.RUNS_INDEX)
        self._followed: dict[str, _Followed] = {}

    def metrics(self) -> list[Counter | Histogram]:
        return [self.submitted, self.started, self.finished, self.duration, self.queue_wait]

    def update(self, client: redis.Redis, moment: float) -> None:
        if not self._index.started:
            self._start(client, moment)
        for run_id, _ in self._index.arrivals(client):
            self._followed.setdefault(run_id, _Followed(False, False))
        if not self._followed:
            return
        seen = RunStore(client).fields_of(list(self._followed), _RUN_FIELDS)
        for run_id, record in seen.items():
            if self._account(self._followed[run_id], record):
                del self._followed[run_id]

    def _start(self, client: redis.Redis, moment: float) -> None:
        """Runs waiting or executing now are followed to their end, but not counted as new."""
        self._index.start(client, moment)
        indexes = RunIndexes(client)
        for run_id in indexes.queued():
            self._followed[run_id] = _Followed(True, False)
        for run_id in indexes.active():
            self._followed[run_id] = _Followed(True, True)

    def _account(self, followed: _Followed, record: dict[str, Any] | None) -> bool:
        """Count what happened to one run since the last look; True once it is done with."""
        if record is None:
            return True  # expired, or removed because its submit failed
        status, gpu = record["status"], record["gpu"] or "unknown"
        queued_at, started_at, ended_at = (record[name] for name in _TIMES)
        if not followed.submitted_counted:
            self.submitted.labels(gpu).inc()
            followed.submitted_counted = True
        if started_at is not None and not followed.started_counted:
            self.started.labels(gpu).inc()
            wait = _duration(queued_at, started_at)
            if wait is not None:
                self.queue_wait.labels(gpu).observe(wait)
            followed.started_counted = True
        if status not in _FINAL_VALUES:
            return False
        self.finished.labels(gpu, status).inc()
        ran = _duration(started_at, ended_at)
        if ran is not None:
            self.duration.labels(gpu, status).observe(ran)
        return True


class WebhookMetrics:
    """Webhook delivery outcomes, followed from the outbox's delivered and dead-letter indexes."""

    def __init__(self) -> None:
        self.outcomes = Counter(
            "comfyq_webhook_deliveries", "Webhook events settled, by outcome: delivered, dead "
            "(retries exhausted or rejected) or gone (the receiver answered 410).",
            ["outcome"], registry=None)
        self._delivered = IndexFollower(keys.WEBHOOKS_DELIVERED)
        self._dead = IndexFollower(keys.WEBHOOKS_DEAD)

    def update(self, client: redis.Redis, moment: float) -> None:
        for follower in (self._delivered, self._dead):
            if not follower.started:
                follower.start(client, moment)
        delivered = self._delivered.arrivals(client)
        if delivered:
            self.outcomes.labels("delivered").inc(len(delivered))
        buried = [event_id for event_id, _ in self._dead.arrivals(client)]
        if buried:
            pipeline = client.pipeline(transaction=False)
            for event_id in buried:
                pipeline.hget(keys.webhook_event(event_id), "state")
            for state in pipeline.execute():
                self.outcomes.labels("gone" if state == "gone" else "dead").inc()

    @staticmethod
    def backlog(client: redis.Redis) -> tuple[int, int]:
        """(events not delivered yet, events dead-lettered and not redelivered)."""
        pipeline = client.pipeline(transaction=False)
        pipeline.zcard(keys.WEBHOOKS_OUTSTANDING)
        pipeline.zcard(keys.WEBHOOKS_DEAD)
        pending, dead = pipeline.execute()
        return pending, dead


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def _fleet_gauges(states: list[QueueState]) -> list[GaugeMetricFamily]:
    depth = _gauge("comfyq_queue_depth", "Runs waiting in the GPU type's queue.", ["gpu_type"])
    oldest = _gauge("comfyq_queue_oldest_waiting_seconds",
                    "Age of the oldest run waiting in the queue; 0 when none waits.", ["gpu_type"])
    online = _gauge("comfyq_workers_online", "GPU workers online.", ["gpu_type"])
    busy = _gauge("comfyq_workers_busy", "GPU workers executing a run.", ["gpu_type"])
    for state in states:
        labels = [state.gpu_type]
        depth.add_metric(labels, state.depth)
        oldest.add_metric(labels, state.oldest_waiting.age_seconds if state.oldest_waiting else 0)
        online.add_metric(labels, len(state.workers))
        busy.add_metric(labels, sum(1 for w in state.workers if w.current_run))
    return [depth, oldest, online, busy]


def _backlog_gauges(pending: int | None, dead: int | None) -> list[GaugeMetricFamily]:
    families = [
        _gauge("comfyq_webhook_deliveries_pending", "Webhook events not delivered yet."),
        _gauge("comfyq_webhook_deliveries_dead",
               "Webhook events dead-lettered or gone and not redelivered."),
    ]
    if pending is not None and dead is not None:
        families[0].add_metric([], pending)
        families[1].add_metric([], dead)
    return families


class ComfyqCollector(Collector):
    """Collects every comfyq metric from Redis; one instance per process keeps the counters.

    :param settings: where Redis and the broker are, GPU types and histogram buckets.
    :param records: client of the run records' Redis; built from ``settings`` when omitted.
    :param broker: the broker holding the queues; built from ``settings`` when omitted.
    """

    def __init__(self, settings: Settings, records: redis.Redis | None = None,
                 broker: Broker | None = None) -> None:
        self.settings = settings
        self.records = records or _client(settings.redis_url)
        self.broker = broker or Broker(settings, timeout=REDIS_TIMEOUT_SECONDS)
        self.runs = RunMetrics(settings.metrics_buckets_seconds)
        self.webhooks = WebhookMetrics()
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        """Metric names without touching Redis (the registry asks at registration)."""
        families = [_gauge("comfyq_redis_up", ""), *_fleet_gauges([]), *_backlog_gauges(None, None)]
        for metric in [*self.runs.metrics(), self.webhooks.outcomes]:
            families += metric.describe()
        return families

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            up = _gauge("comfyq_redis_up", "1 when the last scrape could read Redis, else 0.")
            try:
                families = self._read()
            except redis.RedisError as error:
                logger.warning("metrics scrape could not read Redis: %s", error)
                up.add_metric([], 0)
                yield up
                return
            up.add_metric([], 1)
            yield up
            yield from families

    def _read(self) -> list[Metric]:
        moment = now()
        self.runs.update(self.records, moment)
        self.webhooks.update(self.records, moment)
        states = queue_states(self.records, self.broker, self.settings.gpu_types, moment)
        families: list[Metric] = [*_fleet_gauges(states),
                                  *_backlog_gauges(*WebhookMetrics.backlog(self.records))]
        for metric in [*self.runs.metrics(), self.webhooks.outcomes]:
            families += metric.collect()
        return families


def _client(url: str) -> redis.Redis:
    return redis_client(url, timeout=REDIS_TIMEOUT_SECONDS)


def metrics_registry(settings: Settings | None = None) -> CollectorRegistry:
    """A registry holding a fresh :class:`ComfyqCollector` (counters start at zero)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ComfyqCollector(settings or get_settings()))
    return registry


@functools.cache
def default_registry() -> CollectorRegistry:
    """This process's registry, from the environment's settings, made on first use."""
    return metrics_registry()


def render_metrics(registry: CollectorRegistry | None = None,
                   accept: str | None = None) -> tuple[bytes, str]:
    """The scrape body and its content type, in the format the ``Accept`` header asks for.

    For a framework route: ``body, content_type = render_metrics(accept=request.headers.get(
    "accept"))``. It reads Redis, so call it from a thread (a plain ``def`` route), not an
    event loop.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry or default_registry()), content_type


class MetricsAsgiApp:
    """An ASGI app answering GET (and HEAD) with the metrics.

    An instance, not a function, so Starlette and FastAPI take it as a raw ASGI app both in
    ``app.mount("/metrics", ...)`` and in ``app.add_route("/metrics", ...)``. The Redis reads
    run in a worker thread, so the event loop of the hosting app never waits on them.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            status, body, content_type = 405, b"method not allowed\n", "text/plain"
        else:
            accept = ",".join(value.decode("latin-1") for name, value in scope.get("headers", [])
                              if name.lower() == b"accept")
            body, content_type = await asyncio.to_thread(render_metrics, self.registry, accept)
            status = 200
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode("latin-1")),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> MetricsAsgiApp:
    """The metrics as an ASGI app (this process's registry unless given); see MetricsAsgiApp."""
    return MetricsAsgiApp(registry)


def serve_metrics(host: str, port: int,
                  registry: CollectorRegistry | None = None) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` over HTTP from a background thread; returns (server, thread).

    A first collection right away makes the counters count from now rather than from the first
    scrape. Stop the server with ``server.shutdown()``.
    """
    registry = registry or default_registry()
    server, thread = start_http_server(port, addr=host, registry=registry)
    list(registry.collect())
    return server, thread
