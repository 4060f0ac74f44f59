"""Prometheus metrics of runs, queues, workers and webhooks, read from Redis at scrape time.

- Run counters and histograms are counted where runs change, in Redis (``keys.RUN_METRICS``):
  ``RunStore.create`` counts a submit, and the record's scripts count a run's first start with
  its queue wait (queued -> started) and its end by status with its duration (started ->
  ended), in the same step as the change. They are totals of the deployment, so every exporter
  reports the same values, whenever it started; a scrape reads them in one round trip.
- Webhook outcomes are counted the same way by the outbox's scripts (``keys.WEBHOOK_METRICS``).
- Queue depth, the oldest waiting run and workers online are read fresh at every scrape
  (``comfyq.queue_overview``), so they are right even for queues no worker consumes.

Histograms: each observation is kept at its value rounded up to two significant digits (2.43 s
as 2.5), so every bucket bound of two significant digits (``COMFYQ_METRICS_BUCKETS_SECONDS``:
1, 2.5, 45, 900, 2700, ...) is exact, whatever bounds the exporters are given.

Serve them with ``comfyq metrics`` (:func:`serve_metrics`), or inside another web application
with :func:`metrics_asgi_app` or :func:`render_metrics`. No series carries a ``_created``
sample: the counts began with the deployment, not with the exporter.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder, start_http_server
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from comfyq.broker import Broker
from comfyq.errors import BrokerUnavailable
from comfyq.queue_overview import QueueState, queue_states
from comfyq.redis import keys
from comfyq.redis.connection import QUICK_TIMEOUT_SECONDS, redis_client
from comfyq.runs.store import now
from comfyq.settings import Settings, get_settings

logger = logging.getLogger(__name__)

#: Seconds a Redis command of a scrape may take before the scrape reports Redis as down.
REDIS_TIMEOUT_SECONDS = QUICK_TIMEOUT_SECONDS
#: How the fields of the count hashes join their parts (``finished|A100|success``).
FIELD_SEPARATOR = "|"


class Observations:
    """One histogram's observations per label set, as Redis keeps them: how many were seen at
    each (rounded-up) value, and their exact sum."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.counts: dict[tuple[str, ...], dict[float, int]] = defaultdict(dict)
        self.sums: dict[tuple[str, ...], float] = {}

    def add_count(self, parts: list[str], value: str) -> None:
        *labels, at = parts
        self.counts[tuple(labels)][float(at)] = int(value)

    def add_sum(self, labels: list[str], value: str) -> None:
        self.sums[tuple(labels)] = float(value)

    def family(self, bounds: Iterable[float]) -> HistogramMetricFamily:
        bounds = sorted(set(bounds))
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, counts in sorted(self.counts.items()):
            cumulative = [(floatToGoString(bound),
                           sum(count for at, count in counts.items() if at <= bound))
                          for bound in bounds]
            family.add_metric(list(labels), [*cumulative, ("+Inf", sum(counts.values()))],
                              sum_value=self.sums.get(labels, 0.0))
        return family


class RunMetrics:
    """Run counters and histograms from the counts kept in ``keys.RUN_METRICS``.

    :param buckets: the histograms' bucket bounds (seconds).
    """

    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(buckets)

    def families(self, fields: Mapping[str, str]) -> list[Metric]:
        """The metrics of the hash's ``fields`` (none: every family, empty)."""
        counters = {
            "submitted": CounterMetricFamily("comfyq_runs_submitted", "Runs submitted.",
                                             labels=["gpu_type"]),
            "started": CounterMetricFamily("comfyq_runs_started",
                                           "Runs a worker started executing (once per run).",
                                           labels=["gpu_type"]),
            "finished": CounterMetricFamily("comfyq_runs_finished",
                                            "Runs that ended, by final status.",
                                            labels=["gpu_type", "status"]),
        }
        histograms = {
            "duration": Observations("comfyq_run_duration_seconds",
                                     "Execution time of ended runs (started -> ended).",
                                     ["gpu_type", "status"]),
            "queue_wait": Observations("comfyq_run_queue_wait_seconds",
                                       "Time runs waited in their queue (queued -> started).",
                                       ["gpu_type"]),
        }
        for field, value in sorted(fields.items()):
            kind, *parts = field.split(FIELD_SEPARATOR)
            if kind in counters:
                counters[kind].add_metric(parts, int(value))
            elif kind in histograms:
                histograms[kind].add_count(parts, value)
            elif kind.removesuffix("_sum") in histograms:
                histograms[kind.removesuffix("_sum")].add_sum(parts, value)
        return [*counters.values(), *(h.family(self.buckets) for h in histograms.values())]


def webhook_families(outcomes: Mapping[str, str]) -> list[Metric]:
    """Webhook events settled, from the counts kept in ``keys.WEBHOOK_METRICS``."""
    family = CounterMetricFamily(
        "comfyq_webhook_deliveries", "Webhook events settled, by outcome: delivered, dead "
        "(retries exhausted or rejected) or gone (the receiver answered 410).",
        labels=["outcome"])
    for outcome, count in sorted(outcomes.items()):
        family.add_metric([outcome], int(count))
    return [family]


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
    """Collects every comfyq metric from Redis.

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

    def describe(self) -> list[Metric]:
        """Metric names without touching Redis (the registry asks at registration)."""
        return [_gauge("comfyq_redis_up", ""), *_fleet_gauges([]), *_backlog_gauges(None, None),
                *self.runs.families({}), *webhook_families({})]

    def collect(self) -> Iterator[Metric]:
        up = _gauge("comfyq_redis_up", "1 when the last scrape could read Redis (and the broker), else 0.")
        try:
            families = self._read()
        except (redis.RedisError, BrokerUnavailable) as error:
            logger.warning("metrics scrape could not read Redis or the broker: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        pipeline = self.records.pipeline(transaction=False)
        pipeline.hgetall(keys.RUN_METRICS)
        pipeline.hgetall(keys.WEBHOOK_METRICS)
        pipeline.zcard(keys.WEBHOOKS_OUTSTANDING)
        pipeline.zcard(keys.WEBHOOKS_DEAD)
        runs, outcomes, pending, dead = pipeline.execute()
        states = queue_states(self.records, self.broker, self.settings.gpu_types, now())
        return [*_fleet_gauges(states), *_backlog_gauges(pending, dead),
                *self.runs.families(runs), *webhook_families(outcomes)]


def _client(url: str) -> redis.Redis:
    return redis_client(url, timeout=REDIS_TIMEOUT_SECONDS)


def metrics_registry(settings: Settings | None = None) -> CollectorRegistry:
    """A registry holding a :class:`ComfyqCollector` of ``settings`` (the environment's)."""
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

    Stop the server with ``server.shutdown()``.
    """
    server, thread = start_http_server(port, addr=host, registry=registry or default_registry())
    return server, thread
