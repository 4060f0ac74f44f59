"""Table tests of the Lua scripts: a start state in Redis, a call, the expected reply and the
expected whole database afterwards (values and TTLs), and that every key the call changed came
in through its KEYS."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.crc import key_slot

from comfyq.redis.scripts import LuaScript


class Z(dict):
    """A sorted set: member -> score."""


class L(list):
    """A list."""


@dataclass(frozen=True)
class Expiring:
    """A value whose key expires in ``seconds``."""

    value: Any
    seconds: float


#: key -> value: str (string), dict (hash), Z (sorted set), L (list), or Expiring(one of them).
State = Mapping[str, Any]


@dataclass(frozen=True)
class Call:
    """What a call of a script passed and got back."""

    keys: Sequence[str]
    reply: Any
    published: list[str] | None = None


@dataclass(frozen=True)
class Case:
    """One row of a script's table.

    :param end: the whole database afterwards; None: unchanged.
    :param published: messages the call published on the channel it watched (None: not watched).
    """

    name: str
    start: State
    args: Mapping[str, Any]
    reply: Any
    end: State | None = None
    published: list[str] | None = None


def cases(*rows: Case) -> Any:
    """``rows`` as pytest parameters named after them."""
    import pytest

    return pytest.mark.parametrize("case", rows, ids=[row.name for row in rows])


def load(client: redis.Redis, state: State) -> None:
    for key, value in state.items():
        ttl = None
        if isinstance(value, Expiring):
            value, ttl = value.value, value.seconds
        if isinstance(value, Z):
            client.zadd(key, value)
        elif isinstance(value, L):
            client.rpush(key, *value)
        elif isinstance(value, dict):
            client.hset(key, mapping=value)
        else:
            client.set(key, value)
        if ttl is not None:
            client.pexpire(key, int(ttl * 1000))


def _value(client: redis.Redis, key: str) -> Any:
    kind = client.type(key)
    if kind == "string":
        return client.get(key)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "zset":
        return Z(client.zrange(key, 0, -1, withscores=True))
    if kind == "list":
        return L(client.lrange(key, 0, -1))
    raise AssertionError(f"{key}: a {kind} is in no table")


def dump(client: redis.Redis) -> dict[str, Any]:
    """The whole database as a State: TTLs in whole seconds, values typed as in ``load``."""
    state: dict[str, Any] = {}
    for key in client.scan_iter():
        value = _value(client, key)
        left = client.pttl(key)
        state[key] = value if left < 0 else Expiring(value, round(left / 1000))
    return state


def _typed(state: State) -> dict[str, Any]:
    """``state`` with each value's type beside it, so a hash never passes for a sorted set."""
    typed = {}
    for key, value in state.items():
        seconds = value.seconds if isinstance(value, Expiring) else None
        inner = value.value if isinstance(value, Expiring) else value
        typed[key] = (type(inner).__name__, inner, seconds)
    return typed


def check(client: redis.Redis, case: Case, call: Callable[..., Call]) -> Call:
    """Run one row: load its start, make its call, compare reply, database and channel."""
    load(client, case.start)
    before = dump(client)
    made = call(client, **case.args)
    assert made.reply == case.reply
    after = dump(client)
    assert _typed(after) == _typed(before if case.end is None else case.end)
    if case.published is not None:
        assert made.published == case.published
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert changed <= set(made.keys), f"changed without coming through KEYS: {changed}"
    return made


def run(client: redis.Redis, script: LuaScript, keys: Sequence[str],
        args: Sequence[Any]) -> Call:
    return Call(keys, script.on(client)(keys=list(keys), args=list(args)))


def watching(client: redis.Redis, channel: str, act: Callable[[], Call]) -> Call:
    """``act``, with what it published on ``channel`` (read up to a marker published after)."""
    marker = "--end of call--"
    subscriber = client.pubsub()
    try:
        subscriber.subscribe(channel)
        assert subscriber.get_message(timeout=5)["type"] == "subscribe"
        made = act()
        client.publish(channel, marker)
        published = []
        while (message := subscriber.get_message(timeout=5)) and message["data"] != marker:
            published.append(message["data"])
        assert message is not None, "the marker never arrived"
        return Call(made.keys, made.reply, published)
    finally:
        subscriber.close()


def assert_one_slot(keys: Sequence[str], tag: str, exempt: Sequence[str] = ()) -> None:
    """The ``keys`` a script got, except ``exempt`` ones, carry hash tag ``tag``: one slot."""
    own = [key for key in keys if key not in exempt]
    assert own and all("{" + tag + "}" in key for key in own), own
    assert len({key_slot(key.encode()) for key in own}) == 1, own
