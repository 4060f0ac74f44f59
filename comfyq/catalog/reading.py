"""Node catalogs in Redis, read: what producers validate against, and what ``comfyq nodes`` shows.

Reading (producers). :class:`CatalogReader` keeps each GPU type's compiled catalog in the
process and asks Redis at most once per :data:`CATALOG_CHECK_SECONDS` whether it changed: one
round trip (``catalog_read.lua`` answers the digest alone when it matches, else the new
catalog too).
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import redis

from comfyq.catalog.validation import CompiledCatalog, compile_catalog
from comfyq.redis import keys, scripts

#: Seconds a producer trusts its copy of a GPU type's catalog before asking Redis again.
CATALOG_CHECK_SECONDS = 1.0


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
    return scripts.CATALOG_READ.on(client)(
        keys=[keys.catalog_digest(gpu_type), keys.catalog(gpu_type)], args=[known_digest])


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
