"""A Redis database of the demo's own on a server that may serve a fleet already.

comfyq's keys and Celery's queues have fixed names, so a demo sharing a database with a running
deployment would share its queues too: that fleet's workers would take the demo's runs and
webhook deliveries. Redis keeps each numbered database apart (keys, lists, and Celery's event
channels, which kombu prefixes with the database number), so the demo claims an empty one,
and afterwards deletes what comfyq and Celery wrote there, and its claim.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

#: The key that marks a database as the demo's while it runs.
CLAIM_KEY = "comfyq-demo:claim"
#: Seconds a claim lasts when the demo dies without releasing it.
CLAIM_TTL_SECONDS = 24 * 3600
#: Databases a Redis has when its CONFIG cannot be read (managed servers hide it).
DEFAULT_DATABASES = 16
#: What comfyq and Celery write in a database: comfyq's keys, its queues (with their priority
#: lists), kombu's bindings and its unacknowledged-message keys.
WRITTEN_PATTERNS = ("comfyq:*", "comfyq.*", "_kombu.*", "unacked*")


def database_url(url: str, index: int) -> str:
    """``url`` naming database ``index`` instead of its own."""
    parts = urlsplit(url)
    if parts.scheme == "unix":  # a socket path is the URL's path; the database is ?db=
        query = dict(parse_qsl(parts.query)) | {"db": str(index)}
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=f"/{index}"))


@dataclass
class DemoDatabase:
    """A database claimed for the demo; :meth:`release` cleans it up."""

    url: str
    index: int
    token: str

    def release(self) -> int:
        """Delete what comfyq and Celery wrote, and the claim; returns how many keys went."""
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            written = {key for pattern in WRITTEN_PATTERNS
                       for key in client.scan_iter(match=pattern, count=1000)}
            for batch in _batches(sorted(written), 500):
                client.unlink(*batch)
            if client.get(CLAIM_KEY) == self.token:
                client.delete(CLAIM_KEY)
            return len(written)
        finally:
            client.close()


def claim_empty_database(url: str) -> DemoDatabase | None:
    """Claim the highest-numbered empty database of the server at ``url`` (never ``url``'s
    own), or None when it has none free or allows no other (Redis Cluster, some hosted ones)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        own = client.connection_pool.connection_kwargs.get("db", 0)
        count = _database_count(client)
    finally:
        client.close()
    token = uuid.uuid4().hex
    for index in range(count - 1, -1, -1):
        if index != own and _claim(database_url(url, index), token):
            return DemoDatabase(database_url(url, index), index, token)
    return None


def _claim(url: str, token: str) -> bool:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        if client.dbsize() != 0 or not client.set(CLAIM_KEY, token, nx=True,
                                                   ex=CLAIM_TTL_SECONDS):
            return False
        if client.dbsize() == 1:
            return True
        client.delete(CLAIM_KEY)  # something else wrote there meanwhile: leave it be
        return False
    except redis.ResponseError:  # no such database, or SELECT refused
        return False
    finally:
        client.close()


def _database_count(client: redis.Redis) -> int:
    try:
        return int(client.config_get("databases").get("databases", DEFAULT_DATABASES))
    except redis.ResponseError:
        return DEFAULT_DATABASES


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[start:start + size] for start in range(0, len(items), size)]
