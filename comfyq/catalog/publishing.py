"""Node catalogs in Redis, written: every GPU worker publishes what it can run.

Publishing (workers). A worker stores its own catalog (ComfyUI ``/object_info`` JSON) under its
name in ``keys.worker_catalogs(gpu_type)``, with when it published and which custom node packs
failed to load in ``keys.worker_catalog_info(gpu_type)``. Then the catalog of the GPU type is
recombined: :func:`comfyq.catalog.object_info.combine_catalogs` over the catalogs of its workers, in worker
name order, stored in ``keys.catalog(gpu_type)`` with its SHA-256 in ``keys.catalog_digest``.
Since a run goes to whichever worker of its type is free, the combined catalog is what EVERY
worker can run, and it depends only on which workers are there, never on who published last, so
validation does not flap while workers come and go. Recombining happens in a WATCH transaction
so two workers publishing at once cannot interleave.

A worker's catalog leaves the combination when the worker stops (it withdraws it) or, if it
died, once its presence key has expired: the other workers of its type check every few seconds.
A catalog younger than :data:`PUBLISH_GRACE_SECONDS` is never dropped, so a worker that has just
published but not yet announced itself counts. When the last worker of a type is gone, the last
combined catalog stays: runs still queue for that type, and are still checked against it.

The publisher takes the catalog as an argument: an in-process worker builds it from its node
classes (``comfyq.execution.registry.in_process_catalog``); a ComfyUI-backed worker publishes
its server's ``/object_info``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from comfyq.catalog.object_info import combine_catalogs
from comfyq.redis import keys
from comfyq.worker_presence import online_workers

logger = logging.getLogger(__name__)

#: Seconds between a worker's checks for departed workers (and for its own entry).
UPKEEP_SECONDS = 5.0
#: A published catalog counts this long even while its worker does not show as online.
PUBLISH_GRACE_SECONDS = 30.0

#: (catalog, failed packs: pack path -> error) of a worker.
CatalogSource = Callable[[], tuple[dict, dict[str, str]]]


def catalog_digest(catalog_json: str) -> str:
    return hashlib.sha256(catalog_json.encode()).hexdigest()


def publish_worker_catalog(client: redis.Redis, gpu_type: str, worker_name: str,
                           catalog: Mapping[str, Any],
                           failed_packs: Mapping[str, str] | None = None) -> str:
    """Store ``worker_name``'s catalog for ``gpu_type`` and recombine; returns the new digest."""
    info = {"published_at": time.time(), "failed_packs": dict(failed_packs or {}),
            "classes": len(catalog)}
    pipeline = client.pipeline(transaction=True)
    pipeline.hset(keys.worker_catalogs(gpu_type), worker_name, json.dumps(catalog))
    pipeline.hset(keys.worker_catalog_info(gpu_type), worker_name, json.dumps(info))
    pipeline.execute()
    return recombine(client, gpu_type)


def withdraw_worker_catalog(client: redis.Redis, gpu_type: str, worker_name: str) -> str | None:
    """Take ``worker_name``'s catalog out of ``gpu_type``'s and recombine what is left."""
    pipeline = client.pipeline(transaction=True)
    pipeline.hdel(keys.worker_catalogs(gpu_type), worker_name)
    pipeline.hdel(keys.worker_catalog_info(gpu_type), worker_name)
    pipeline.execute()
    return recombine(client, gpu_type)


def _online_names(client: redis.Redis) -> set[str]:
    return {worker["name"] for worker in online_workers(client)}


def _departed(infos: Mapping[str, str], online: set[str], now: float) -> list[str]:
    """Workers whose catalog no longer counts: offline and published before the grace period."""
    departed = []
    for name, text in infos.items():
        try:
            published_at = float(json.loads(text).get("published_at", 0))
        except (ValueError, TypeError, AttributeError):
            published_at = 0.0
        if name not in online and now - published_at > PUBLISH_GRACE_SECONDS:
            departed.append(name)
    return departed


def recombine(client: redis.Redis, gpu_type: str) -> str | None:
    """Drop departed workers' catalogs and store the combination of the rest.

    Returns the digest of the GPU type's catalog (None when none was ever published).
    """
    catalogs_key, info_key = keys.worker_catalogs(gpu_type), keys.worker_catalog_info(gpu_type)
    with client.pipeline(transaction=True) as pipeline:
        while True:
            try:
                pipeline.watch(catalogs_key, info_key)
                return _recombine_watched(pipeline, client, gpu_type)
            except redis.WatchError:
                continue  # another worker published meanwhile: start over with its catalog


def _recombine_watched(pipeline: Any, client: redis.Redis, gpu_type: str) -> str | None:
    catalogs_key, info_key = keys.worker_catalogs(gpu_type), keys.worker_catalog_info(gpu_type)
    entries = pipeline.hgetall(catalogs_key)
    infos = pipeline.hgetall(info_key)
    digest = pipeline.get(keys.catalog_digest(gpu_type))
    departed = set(_departed(infos, _online_names(client), time.time()))
    departed |= {name for name in entries if name not in infos}
    live = sorted(name for name in entries if name not in departed)
    pipeline.multi()
    if departed:
        pipeline.hdel(catalogs_key, *departed)
        pipeline.hdel(info_key, *departed)
    changed = False
    if live:
        combined = combine_catalogs([json.loads(entries[name]) for name in live])
        text = json.dumps(combined, separators=(",", ":"))
        new_digest = catalog_digest(text)
        if new_digest != digest:
            pipeline.set(keys.catalog(gpu_type), text)
            pipeline.set(keys.catalog_digest(gpu_type), new_digest)
            changed = True
        digest = new_digest
    pipeline.execute()
    if departed:
        logger.info("catalog %s: dropped the catalogs of departed workers %s", gpu_type,
                    ", ".join(sorted(departed)))
    if changed:
        logger.info("catalog %s: %d classes offered by %d worker(s)", gpu_type, len(combined),
                    len(live))
    return digest


class CatalogPublisher:
    """Keeps one worker's catalog published while the worker runs.

    :param client: Redis (``decode_responses=True``).
    :param gpu_type: the GPU type the worker serves.
    :param worker_name: the worker's name (as in its presence key).
    :param catalog: what the worker can run, in ``/object_info`` format.
    :param failed_packs: custom node packs that failed to load: path -> error.
    """

    def __init__(self, client: redis.Redis, gpu_type: str, worker_name: str,
                 catalog: Mapping[str, Any], failed_packs: Mapping[str, str] | None = None,
                 upkeep_seconds: float = UPKEEP_SECONDS) -> None:
        self.client = client
        self.gpu_type = gpu_type
        self.worker_name = worker_name
        self.catalog = catalog
        self.failed_packs = dict(failed_packs or {})
        self.upkeep_seconds = upkeep_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> str:
        return publish_worker_catalog(self.client, self.gpu_type, self.worker_name,
                                      self.catalog, self.failed_packs)

    def upkeep(self) -> None:
        """Publish again if the entry vanished; recombine when a worker has departed."""
        pipeline = self.client.pipeline(transaction=False)
        pipeline.hexists(keys.worker_catalogs(self.gpu_type), self.worker_name)
        pipeline.hgetall(keys.worker_catalog_info(self.gpu_type))
        present, infos = pipeline.execute()
        if not present:
            logger.warning("catalog %s: this worker's entry was gone; publishing it again",
                           self.gpu_type)
            self.publish()
        elif _departed(infos, _online_names(self.client), time.time()):
            recombine(self.client, self.gpu_type)

    def start(self) -> None:
        """Publish now, then keep the catalog up to date from a daemon thread."""
        self.publish()
        self._thread = threading.Thread(target=self._loop, name="comfyq-catalog", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.upkeep_seconds):
            try:
                self.upkeep()
            except redis.RedisError as error:
                logger.warning("catalog %s: upkeep failed: %s", self.gpu_type, error)

    def stop(self) -> None:
        """Stop the upkeep and withdraw the catalog (the worker is leaving)."""
        self._stop.set()
        try:
            withdraw_worker_catalog(self.client, self.gpu_type, self.worker_name)
        except redis.RedisError as error:
            logger.warning("catalog %s: could not withdraw this worker's catalog: %s",
                           self.gpu_type, error)


_worker_publisher: CatalogPublisher | None = None
