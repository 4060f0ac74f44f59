"""Every Lua script of comfyq/redis/lua (the outbox's in test_lua_outbox_scripts.py) as a table:
start state -> arguments -> reply and the whole database afterwards. Run ranks, statuses and
times are fixed, so each row says exactly what the script leaves behind."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.crc import key_slot

from comfyq.redis import keys, scripts
from comfyq.run_status import FINAL_RANK, STATUS_RANK, RunStatus
from tests.redis.lua_tables import (
    Call,
    Case,
    Expiring,
    Z,
    assert_one_slot,
    cases,
    check,
    run,
    watching,
)

RUN = "r1"
RECORD, UPDATES, LEASE, CANCEL = (keys.run(RUN), keys.run_updates(RUN), keys.run_lease(RUN),
                                  keys.run_cancel(RUN))
ACTIVE, QUEUED, METRICS = keys.ACTIVE_RUNS, keys.QUEUED_RUNS, keys.RUN_METRICS
NOW, RETENTION, LEASE_SECONDS = 50, 100, 30

QUEUED_RUN = {RECORD: {"status": "queued", "rank": "1", "attempts": "0"}, QUEUED: Z({RUN: 10})}
RUNNING_RUN = {RECORD: {"status": "running", "rank": "3", "attempts": "1"},
               ACTIVE: Z({RUN: 20}), LEASE: Expiring("tok", LEASE_SECONDS)}
FINAL_RUN = {RECORD: {"status": "success", "rank": "9"}}


def pairs(fields: dict[str, str] | None) -> list[str]:
    return [item for pair in (fields or {}).items() for item in pair]


def transition(client: redis.Redis, status: RunStatus | None, force: bool = False,
               token: str = "", only_from: tuple[RunStatus, ...] = (),
               fields: dict[str, str] | None = None) -> Call:
    args = [status.value if status else "", status.rank if status else 0, "1" if force else "0",
            token, RETENTION, NOW, RUN, len(only_from), *(s.value for s in only_from),
            *pairs(fields)]
    return watching(client, UPDATES, lambda: run(
        client, scripts.RUN_TRANSITION, [RECORD, UPDATES, LEASE, ACTIVE, QUEUED, METRICS], args))


def record(status: str, rank: int, **fields: str) -> dict[str, str]:
    return {"status": status, "rank": str(rank), **fields}


#: Counts already there: a success of 1.25 s before.
COUNTED = {"finished|A100|success": "1", "duration|A100|success|13e-1": "1",
           "duration_sum|A100|success": "1.25"}
STARTED_RUN = {RECORD: record("running", 3, attempts="1", gpu='"A100"', started_at="20"),
               ACTIVE: Z({RUN: 20}), METRICS: COUNTED}


@cases(
    Case("forward", QUEUED_RUN, {"status": RunStatus.STARTED, "fields": {"worker": "w"}},
         "queued", {RECORD: record("started", 2, attempts="0", worker="w"), ACTIVE: Z({RUN: NOW}),
                    METRICS: {"started|unknown": "1"}},
         published=["started"]),
    Case("fields only", QUEUED_RUN, {"status": None, "fields": {"progress": "0.5"}}, "queued",
         {RECORD: record("queued", 1, attempts="0", progress="0.5"), QUEUED: Z({RUN: 10})},
         published=[""]),
    Case("backward refused", RUNNING_RUN, {"status": RunStatus.QUEUED}, None, published=[]),
    Case("same status refused", RUNNING_RUN, {"status": RunStatus.RUNNING}, None, published=[]),
    Case("forced back to queued", RUNNING_RUN, {"status": RunStatus.QUEUED, "force": True},
         "running", {RECORD: record("queued", 1, attempts="1"), QUEUED: Z({RUN: NOW}),
                     LEASE: Expiring("tok", LEASE_SECONDS)}, published=["queued"]),
    Case("only from: status not listed", RUNNING_RUN,
         {"status": RunStatus.TIMEOUT, "only_from": (RunStatus.QUEUED,)}, None, published=[]),
    Case("only from: status listed", QUEUED_RUN,
         {"status": RunStatus.CANCELLED, "only_from": (RunStatus.NOT_STARTED, RunStatus.QUEUED)},
         "queued", {RECORD: Expiring(record("cancelled", 9, attempts="0"), RETENTION),
                    METRICS: {"finished|unknown|cancelled": "1"}},
         published=["cancelled"]),
    Case("final never moves, even forced", FINAL_RUN,
         {"status": RunStatus.QUEUED, "force": True}, None, published=[]),
    Case("missing run", {}, {"status": RunStatus.STARTED}, None, published=[]),
    Case("fenced, right token", RUNNING_RUN, {"status": RunStatus.UPLOADING, "token": "tok"},
         "running", {RECORD: record("uploading", 4, attempts="1"), ACTIVE: Z({RUN: NOW}),
                     LEASE: Expiring("tok", LEASE_SECONDS)}, published=["uploading"]),
    Case("fenced, wrong token", RUNNING_RUN, {"status": RunStatus.UPLOADING, "token": "other"},
         None, published=[]),
    Case("fenced, no lease", {RECORD: RUNNING_RUN[RECORD], ACTIVE: Z({RUN: 20})},
         {"status": RunStatus.UPLOADING, "token": "tok"}, None, published=[]),
    Case("fenced final write releases the lease", RUNNING_RUN,
         {"status": RunStatus.SUCCESS, "token": "tok", "fields": {"ended_at": "50"}}, "running",
         {RECORD: Expiring(record("success", 9, attempts="1", ended_at="50"), RETENTION),
          METRICS: {"finished|unknown|success": "1"}},
         published=["success"]),
    Case("unfenced final write leaves the lease", RUNNING_RUN, {"status": RunStatus.TIMEOUT},
         "running", {RECORD: Expiring(record("timeout", 9, attempts="1"), RETENTION),
                     LEASE: Expiring("tok", LEASE_SECONDS),
                     METRICS: {"finished|unknown|timeout": "1"}}, published=["timeout"]),
    # Durations are counted at two significant digits, rounded up: 2.5 s as 25e-1, 1.25 s as
    # 13e-1 (the exporter's bounds read them exactly); the sums are exact.
    Case("a started run's final write observes its duration", STARTED_RUN,
         {"status": RunStatus.SUCCESS, "fields": {"ended_at": "22.5"}}, "running",
         {RECORD: Expiring({**STARTED_RUN[RECORD], "status": "success", "rank": "9",
                            "ended_at": "22.5"}, RETENTION),
          METRICS: {**COUNTED, "finished|A100|success": "2", "duration|A100|success|25e-1": "1",
                    "duration|A100|success|13e-1": "1", "duration_sum|A100|success": "3.75"}},
         published=["success"]),
    Case("without ended_at, the duration ends now", STARTED_RUN, {"status": RunStatus.FAILED},
         "running", {RECORD: Expiring({**STARTED_RUN[RECORD], "status": "failed", "rank": "9"},
                                      RETENTION),
                     METRICS: {**COUNTED, "duration|A100|failed|30e0": "1",
                               "duration_sum|A100|failed": "30", "finished|A100|failed": "1"}},
         published=["failed"]),
)
def test_run_transition(fresh_redis, case):
    made = check(fresh_redis, case, transition)
    assert_one_slot(made.keys, RUN, exempt=(ACTIVE, QUEUED, METRICS))


def claim(client: redis.Redis, names: tuple[str, ...] = (),
          fields: dict[str, str] | None = None) -> Call:
    args = ["tok", LEASE_SECONDS * 1000, RETENTION, NOW, RUN, len(names), *names, *pairs(fields)]
    return watching(client, UPDATES, lambda: run(
        client, scripts.RUN_CLAIM, [RECORD, UPDATES, LEASE, ACTIVE, QUEUED, METRICS, CANCEL],
        args))


CLAIMABLE = {RECORD: record("queued", 1, attempts="0", gpu='"A100"', queued_at="10"),
             QUEUED: Z({RUN: 10})}


@cases(
    Case("missing run", {}, {}, ["missing"], published=[]),
    Case("final run", FINAL_RUN, {}, ["final", "success"], published=[]),
    Case("cancel requested", {**QUEUED_RUN, CANCEL: "1"}, {}, ["cancel", "queued"],
         published=[]),
    Case("leased by another worker", {**QUEUED_RUN, LEASE: Expiring("other", 10)}, {},
         ["leased", "queued"], published=[]),
    Case("claimed: lease taken, attempt counted, indexes moved, start and wait counted",
         CLAIMABLE, {"names": ("gpu",), "fields": {"worker": "w", "started_at": "22.5"}},
         ["claimed", "queued", "1", 1, '"A100"'],
         {RECORD: record("started", 2, attempts="1", gpu='"A100"', queued_at="10", worker="w",
                         started_at="22.5"),
          ACTIVE: Z({RUN: NOW}), LEASE: Expiring("tok", LEASE_SECONDS),
          METRICS: {"started|A100": "1", "queue_wait|A100|13e0": "1",
                    "queue_wait_sum|A100": "12.5"}}, published=["started"]),
    Case("claimed again after a re-queue",
         {**QUEUED_RUN, RECORD: record("queued", 1, attempts="1")}, {},
         ["claimed", "queued", "1", 2],
         {RECORD: record("started", 2, attempts="2"), ACTIVE: Z({RUN: NOW}),
          LEASE: Expiring("tok", LEASE_SECONDS)}, published=["started"]),
    # A redelivered message of a run whose worker died: the lease and the attempt are taken,
    # the status (already past 'started') and the started fields stay as they were.
    Case("claimed while still running, its lease expired",
         {RECORD: record("running", 3, attempts="1"), ACTIVE: Z({RUN: 20})},
         {"fields": {"worker": "w2"}}, ["claimed", "running", "3", 2],
         {RECORD: record("running", 3, attempts="2"), ACTIVE: Z({RUN: 20}),
          LEASE: Expiring("tok", LEASE_SECONDS)}, published=[]),
)
def test_run_claim(fresh_redis, case):
    made = check(fresh_redis, case, claim)
    assert_one_slot(made.keys, RUN, exempt=(ACTIVE, QUEUED, METRICS))


def lease(script: scripts.LuaScript, *args: Any):
    def call(client: redis.Redis) -> Call:
        return run(client, script, [LEASE], args)
    return call


HELD = {LEASE: Expiring("tok", LEASE_SECONDS)}


@cases(
    Case("renew, right token", HELD, {"script": lease(scripts.LEASE_RENEW, "tok", 5000)}, 1,
         {LEASE: Expiring("tok", 5)}),
    Case("renew, wrong token", HELD, {"script": lease(scripts.LEASE_RENEW, "other", 5000)}, 0),
    Case("renew, no lease", {}, {"script": lease(scripts.LEASE_RENEW, "tok", 5000)}, 0),
    Case("release, right token", HELD, {"script": lease(scripts.LEASE_RELEASE, "tok")}, 1, {}),
    Case("release, wrong token", HELD, {"script": lease(scripts.LEASE_RELEASE, "other")}, 0),
    Case("release, no lease", {}, {"script": lease(scripts.LEASE_RELEASE, "tok")}, 0),
)
def test_lease_renew_and_release(fresh_redis, case):
    made = check(fresh_redis, case, lambda client, script: script(client))
    assert_one_slot(made.keys, RUN)


def hold_beat_lock(client: redis.Redis, token: str) -> Call:
    return run(client, scripts.BEAT_LOCK_HOLD, [keys.BEAT_LOCK], [token, 15000])


@cases(
    Case("free lock is taken", {}, {"token": "me"}, 1, {keys.BEAT_LOCK: Expiring("me", 15)}),
    Case("own lock is renewed", {keys.BEAT_LOCK: Expiring("me", 3)}, {"token": "me"}, 1,
         {keys.BEAT_LOCK: Expiring("me", 15)}),
    Case("another beat's lock is left alone", {keys.BEAT_LOCK: Expiring("other", 3)},
         {"token": "me"}, 0),
)
def test_beat_lock_hold(fresh_redis, case):
    check(fresh_redis, case, hold_beat_lock)


DIGEST, CATALOG = keys.catalog_digest("A100"), keys.catalog("A100")
PUBLISHED = {DIGEST: "d1", CATALOG: '{"SaveImage": {}}'}


def read_catalog(client: redis.Redis, known: str) -> Call:
    return run(client, scripts.CATALOG_READ, [DIGEST, CATALOG], [known])


@cases(
    Case("digest matches: the digest alone", PUBLISHED, {"known": "d1"}, ["d1"]),
    Case("digest differs: the new catalog", PUBLISHED, {"known": "d0"},
         ["d1", '{"SaveImage": {}}']),
    Case("no copy yet: the catalog", PUBLISHED, {"known": ""}, ["d1", '{"SaveImage": {}}']),
    Case("nothing published", {}, {"known": "d0"}, None),
    Case("digest without its catalog", {DIGEST: "d1"}, {"known": "d0"}, None),
)
def test_catalog_read(fresh_redis, case):
    made = check(fresh_redis, case, read_catalog)
    assert_one_slot(made.keys, "A100")


def test_status_constants_in_lua_equal_the_models(fresh_redis):
    library = scripts.LuaScript(("run_move.lua",)).source
    lua = library + "\nreturn {FINAL_RANK, QUEUED_RANK, STARTED_RANK, STARTED}"
    assert fresh_redis.eval(lua, 0) == [
        FINAL_RANK, STATUS_RANK[RunStatus.QUEUED], STATUS_RANK[RunStatus.STARTED],
        RunStatus.STARTED.value]


def test_every_lua_file_is_a_registered_script_with_its_contract():
    folder = resources.files("comfyq.redis") / "lua"
    on_disk = {entry.name for entry in folder.iterdir() if entry.name.endswith(".lua")}
    assert on_disk == {name for script in scripts.ALL for name in script.files}
    for script in scripts.ALL:
        header = script.source.split(f"-- {script.files[-1]}:")[1].split("\n\n")[0]
        assert "-- KEYS:" in header and "-- ARGV:" in header, script.name


def test_each_script_loads_and_is_registered_once_per_client(fresh_redis, fresh_redis_url):
    other = redis.Redis.from_url(fresh_redis_url, decode_responses=True)
    try:
        for script in scripts.ALL:
            registered = script.on(fresh_redis)
            assert fresh_redis.script_load(script.source) == registered.sha
            assert script.on(fresh_redis) is registered
            assert script.on(other) is not registered and script.on(other).sha == registered.sha
    finally:
        other.close()


def test_keys_of_one_run_share_its_hash_slot():
    run_id = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
    per_run = [keys.run(run_id), keys.run_updates(run_id), keys.run_lease(run_id),
               keys.run_cancel(run_id), keys.webhook_run(run_id), keys.webhook_run_queue(run_id),
               keys.webhook_run_dead(run_id), keys.webhook_run_attempts(run_id)]
    assert all(key.startswith(f"{keys.PREFIX}:") for key in per_run)
    assert {key_slot(key.encode()) for key in per_run} == {key_slot(run_id.encode())}
    assert key_slot(keys.run("another-run").encode()) != key_slot(run_id.encode())
