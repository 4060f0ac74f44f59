"""Node catalogs in Redis: every GPU worker publishes what it can run; producers read it cheaply.

Publishing (workers). A worker stores its own catalog (ComfyUI ``/object_info`` JSON) under its
name in ``keys.worker_catalogs(gpu_type)``, with when it published and which custom node packs
failed to load in ``keys.worker_catalog_info(gpu_type)``. Then the catalog of the GPU type is
recombined: :func:`comfyq.catalog.combine_catalogs` over the catalogs of its workers, in worker
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

Reading (producers). :class:`CatalogReader` keeps each GPU type's compiled catalog in the
process and asks Redis at most once per :data:`CATALOG_CHECK_SECONDS` whether it changed: one
round trip (a script answers the digest alone when it matches, else the new catalog too).

The publisher takes the catalog as an argument: an in-process worker builds it from its node
classes (:func:`in_process_catalog`); a ComfyUI-backed worker publishes its server's
``/object_info``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from comfyq import keys
from comfyq.catalog import build_catalog, combine_catalogs
from comfyq.catalog_validation import CompiledCatalog, compile_catalog

logger = logging.getLogger(__name__)

#: Seconds a producer trusts its copy of a GPU type's catalog before asking Redis again.
CATALOG_CHECK_SECONDS = 1.0
#: Seconds between a worker's checks for departed workers (and for its own entry).
UPKEEP_SECONDS = 5.0
#: A published catalog counts this long even while its worker does not show as online.
PUBLISH_GRACE_SECONDS = 30.0

#: (catalog, failed packs: pack path -> error) of a worker.
CatalogSource = Callable[[], tuple[dict, dict[str, str]]]


def _registry_catalog() -> tuple[dict, dict[str, str]]:
    from comfyq.execution.registry import node_registry

    registry = node_registry()
    return build_catalog(registry.classes, registry.display_names), dict(registry.failed_packs)


def in_process_catalog() -> tuple[dict, dict[str, str]]:
    """The catalog of the in-process node registry (built-ins and packs), and failed packs.

    Built in a freshly spawned process: the worker's main process forks its pool afterwards, and
    a custom pack may touch CUDA when imported, which must never happen in a parent before a fork.
    """
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_registry_catalog)


def catalog_digest(catalog_json: str) -> str:
    return hashlib.sha256(catalog_json.encode()).hexdigest()


# --- publishing ---------------------------------------------------------------------------------

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
    from comfyq.workers.presence import online_workers

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


def start_worker_publisher(client: redis.Redis, description: Mapping[str, Any],
                           source: CatalogSource = in_process_catalog) -> None:
    """Called when a worker is ready: GPU workers publish their catalog (CPU workers do not).

    A failure to build or publish is logged and the worker starts anyway: its runs are still
    validated against its peers' catalogs, or structurally.
    """
    global _worker_publisher
    gpu_type = description.get("gpu_type")
    if not gpu_type:
        return
    try:
        catalog, failed_packs = source()  # the registry logs each pack that failed to load
        publisher = CatalogPublisher(client, gpu_type, description["name"], catalog,
                                     failed_packs)
        publisher.start()
    except Exception:  # the worker must start even when its catalog cannot be published
        logger.exception("could not publish the node catalog of %s", description.get("name"))
        return
    _worker_publisher = publisher


def stop_worker_publisher() -> None:
    """Called when a worker shuts down: withdraw its catalog."""
    global _worker_publisher
    if _worker_publisher is not None:
        _worker_publisher.stop()
        _worker_publisher = None


# --- reading ------------------------------------------------------------------------------------

_READ_SCRIPT = """
local digest = redis.call('GET', KEYS[1])
if not digest then return false end
if digest == ARGV[1] then return {digest} end
local catalog = redis.call('GET', KEYS[2])
if not catalog then return false end
return {digest, catalog}
"""
_READ_SCRIPT_SHA = hashlib.sha1(_READ_SCRIPT.encode()).hexdigest()


@dataclass(frozen=True)
class _Copy:
    digest: str | None
    compiled: CompiledCatalog | None
    checked_at: float


class CatalogReader:
    """A producer's copies of the GPU types' catalogs, compiled for validation.

    Holds no Redis client (pass one to each call), so one reader per client can live in a
    weak mapping keyed by the client (:func:`catalog_reader`).
    """

    def __init__(self, check_seconds: float = CATALOG_CHECK_SECONDS) -> None:
        self.check_seconds = check_seconds
        self._copies: dict[str, _Copy] = {}

    def compiled(self, client: redis.Redis, gpu_type: str) -> CompiledCatalog | None:
        """``gpu_type``'s catalog, or None when no worker of that type ever published one.

        Costs no Redis round trip within ``check_seconds`` of the last check, else one.
        """
        copy = self._copies.get(gpu_type)
        moment = time.monotonic()
        if copy is not None and moment - copy.checked_at < self.check_seconds:
            return copy.compiled
        known = copy.digest if copy is not None and copy.digest else ""
        try:
            answer = _run_read_script(client, gpu_type, known)
        except redis.RedisError:
            if copy is None:
                raise
            # Redis is away: validate with the copy we have; recording the run will tell.
            return copy.compiled
        if not answer:
            copy = _Copy(None, None, moment)
        elif len(answer) == 1 and copy is not None:
            copy = _Copy(copy.digest, copy.compiled, moment)
        else:
            copy = _Copy(answer[0], compile_catalog(json.loads(answer[1])), moment)
        self._copies[gpu_type] = copy
        return copy.compiled


def _run_read_script(client: redis.Redis, gpu_type: str, known_digest: str) -> list | None:
    arguments = (2, keys.catalog_digest(gpu_type), keys.catalog(gpu_type), known_digest)
    try:
        return client.evalsha(_READ_SCRIPT_SHA, *arguments)
    except redis.exceptions.NoScriptError:
        return client.eval(_READ_SCRIPT, *arguments)


_readers: weakref.WeakKeyDictionary[redis.Redis, CatalogReader] = weakref.WeakKeyDictionary()
_readers_lock = threading.Lock()


def catalog_reader(client: redis.Redis) -> CatalogReader:
    """The reader kept for ``client`` (one per client, gone with it)."""
    reader = _readers.get(client)
    if reader is None:
        with _readers_lock:
            reader = _readers.setdefault(client, CatalogReader())
    return reader


# --- what a queue offers (``comfyq nodes``) -----------------------------------------------------

@dataclass
class PublishedCatalog:
    """A GPU type's combined catalog, and what each of its workers published."""

    gpu_type: str
    catalog: dict[str, Any]
    workers: dict[str, dict[str, Any]]

    @property
    def failed_packs(self) -> dict[str, dict[str, str]]:
        """worker name -> {pack path: error}, for workers with failed packs."""
        return {name: info["failed_packs"] for name, info in self.workers.items()
                if info.get("failed_packs")}

    def as_dict(self) -> dict[str, Any]:
        return {"gpu_type": self.gpu_type, "catalog": self.catalog, "workers": self.workers,
                "failed_packs": self.failed_packs}


def published_catalog(client: redis.Redis, gpu_type: str) -> PublishedCatalog | None:
    """What ``gpu_type``'s queue offers now, or None when nothing was published for it."""
    pipeline = client.pipeline(transaction=False)
    pipeline.get(keys.catalog(gpu_type))
    pipeline.hgetall(keys.worker_catalog_info(gpu_type))
    text, infos = pipeline.execute()
    if text is None:
        return None
    workers = {name: json.loads(info) for name, info in sorted(infos.items())}
    return PublishedCatalog(gpu_type, json.loads(text), workers)
