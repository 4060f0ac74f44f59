"""Redis URLs comfyq accepts: one server (``redis://``, ``rediss://``, ``unix://``), or a primary
found through Redis Sentinel (``redis+sentinel://``).

``redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[/db]`` names the
sentinels and the master (service) name they watch; the password is the primary's (and its
replicas'), the sentinels are asked without one. Clients built from it (``comfyq.redis.
connection.redis_client``) ask the sentinels for the current primary and ask again when it
stops answering, so a failover looks like a short outage to every comfyq process.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

#: URL schemes of one Redis server, as redis-py reads them.
SERVER_SCHEMES = ("redis", "rediss", "unix")
#: The scheme of a primary found through Redis Sentinel.
SENTINEL_SCHEME = "redis+sentinel"
#: Every Redis URL scheme comfyq accepts.
REDIS_URL_SCHEMES = (*SERVER_SCHEMES, SENTINEL_SCHEME)
#: The port of a sentinel named without one.
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def kombu_url(self) -> str:
        """The same primary as kombu's Sentinel transport names it (``sentinel://...;...``);
        the master name travels in the ``master_name`` transport option."""
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        return ";".join(f"sentinel://{auth}{host}:{port}/{self.db}"
                        for host, port in self.sentinels)


def is_sentinel(url: str) -> bool:
    return urlsplit(url).scheme == SENTINEL_SCHEME


def parse_sentinel_url(url: str) -> SentinelURL:
    """The sentinels, master name, database and credentials of a ``redis+sentinel://`` URL.

    :raises ValueError: naming what is wrong, never quoting the URL (it may hold a password).
    """
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"expected a URL starting with {SENTINEL_SCHEME}://")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    sentinels = tuple(_host_port(item) for item in hosts.split(",") if item)
    if not sentinels:
        raise ValueError("name at least one sentinel: redis+sentinel://host:port,.../master")
    path = [segment for segment in parts.path.split("/") if segment]
    if not path or len(path) > 2:
        raise ValueError("the path must be /master-name or /master-name/db")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError("the database after the master name is not a number")
        db = int(path[1])
    return SentinelURL(sentinels, unquote(path[0]), db, unquote(username) or None,
                       unquote(password) if credentials else None)


def _host_port(item: str) -> tuple[str, int]:
    host, colon, port = item.rpartition(":")
    if not colon:
        return item, DEFAULT_SENTINEL_PORT
    if not port.isdigit():
        raise ValueError("a sentinel's port is not a number")
    return host.strip("[]"), int(port)


def redis_location(url: str) -> str:
    """A Redis URL without its credentials, for messages and logs."""
    parts = urlsplit(url)
    if parts.scheme == SENTINEL_SCHEME:
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # its message would quote the text after the host, a password maybe
        port = ":(not a port)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
