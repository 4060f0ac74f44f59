"""Every Lua script comfyq runs in Redis, and the one place that loads them.

Each script is a ``.lua`` file in ``comfyq/redis/lua`` whose header says what it does, its KEYS
and its ARGV; every key it touches comes in through KEYS (named by ``comfyq.redis.keys``). A
script that shares helpers with others is its library file followed by its own file. Use one as
``RUN_CLAIM.on(client)(keys=[...], args=[...])``: it is registered once per client (redis-py's
``register_script``, which runs it by SHA1 and loads it into a server that lacks it).
"""

from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass
from importlib import resources

import redis
from redis.commands.core import Script


@dataclass(frozen=True)
class LuaScript:
    """A script made of ``files`` in ``comfyq/redis/lua``, in order (shared helpers first)."""

    files: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.files[-1].removesuffix(".lua")

    @property
    def source(self) -> str:
        return _source(self.files)

    def on(self, client: redis.Redis) -> Script:
        """This script registered on ``client`` (the same object on every call)."""
        registered = _registered.get(client)
        if registered is None:
            with _registered_lock:
                registered = _registered.setdefault(client, {})
        script = registered.get(self)
        if script is None:
            script = registered.setdefault(self, client.register_script(self.source))
        return script


@functools.cache
def _source(files: tuple[str, ...]) -> str:
    folder = resources.files(__package__) / "lua"
    return "\n".join((folder / name).read_text(encoding="utf-8") for name in files)


_registered: weakref.WeakKeyDictionary[redis.Redis, dict[LuaScript, Script]] = (
    weakref.WeakKeyDictionary())
_registered_lock = threading.Lock()

_RUN_MOVE = "run_move.lua"
_OUTBOX_LIBRARY = "outbox_library.lua"

# -- runs (comfyq.runs) ----------------------------------------------------------------------------
RUN_TRANSITION = LuaScript((_RUN_MOVE, "run_transition.lua"))
RUN_CLAIM = LuaScript((_RUN_MOVE, "run_claim.lua"))
LEASE_RENEW = LuaScript(("lease_renew.lua",))
LEASE_RELEASE = LuaScript(("lease_release.lua",))

# -- node catalogs (comfyq.catalog) ----------------------------------------------------------------
CATALOG_READ = LuaScript(("catalog_read.lua",))

# -- webhook outbox (comfyq.webhooks) --------------------------------------------------------------
OUTBOX_RECORD = LuaScript((_OUTBOX_LIBRARY, "outbox_record.lua"))
OUTBOX_START = LuaScript(("outbox_start.lua",))
OUTBOX_FINISH = LuaScript((_OUTBOX_LIBRARY, "outbox_finish.lua"))
OUTBOX_CLAIM = LuaScript((_OUTBOX_LIBRARY, "outbox_claim.lua"))
OUTBOX_UNCLAIM = LuaScript(("outbox_unclaim.lua",))
OUTBOX_REDELIVER = LuaScript((_OUTBOX_LIBRARY, "outbox_redeliver.lua"))

# -- maintenance beat (comfyq.scheduler) -----------------------------------------------------------
BEAT_LOCK_HOLD = LuaScript(("beat_lock_hold.lua",))

#: Every script, for checks that cover them all.
ALL = (RUN_TRANSITION, RUN_CLAIM, LEASE_RENEW, LEASE_RELEASE, CATALOG_READ, OUTBOX_RECORD,
       OUTBOX_START, OUTBOX_FINISH, OUTBOX_CLAIM, OUTBOX_UNCLAIM, OUTBOX_REDELIVER, BEAT_LOCK_HOLD)
