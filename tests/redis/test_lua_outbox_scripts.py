"""The webhook outbox's Lua scripts as tables: start state -> arguments -> reply and the whole
database afterwards. One run ``r1`` with events ``e1``, ``e2``; times are fixed (now is 50)."""

from __future__ import annotations

import redis

from comfyq.redis import keys, scripts
from comfyq.webhooks import scripts as outbox_scripts
from tests.redis.lua_tables import Call, Case, Expiring, L, Z, assert_one_slot, cases, check, run

RUN, URL = "r1", "https://hooks.example/r1"
STATE, QUEUE, RUN_DEAD, ATTEMPTS, RECORD = (
    keys.webhook_run(RUN), keys.webhook_run_queue(RUN), keys.webhook_run_dead(RUN),
    keys.webhook_run_attempts(RUN), keys.run(RUN))
DUE, INFLIGHT, OUTSTANDING = keys.WEBHOOKS_DUE, keys.WEBHOOKS_INFLIGHT, keys.WEBHOOKS_OUTSTANDING
DELIVERED, DEAD, GONE = keys.WEBHOOKS_DELIVERED, keys.WEBHOOKS_DEAD, keys.WEBHOOKS_GONE_URLS
OUTCOMES = keys.WEBHOOK_METRICS
E1, E2 = keys.webhook_event("e1"), keys.webhook_event("e2")
#: Keys shared by every run (and event hashes, named by event id alone).
CROSS_RUN = (DUE, INFLIGHT, OUTSTANDING, DELIVERED, DEAD, GONE, OUTCOMES, E1, E2)
NOW, INTERVAL, TTL = 50, 10, 1000
CLAIM_DEADLINE, LEASE_DEADLINE, DELIVERED_TTL = 90, 80, 600


def event(seq: int, state: str, kind: str = "status", attempts: int = 0, **more: str) -> dict:
    """An event hash as outbox_record.lua writes it, then moved to ``state``."""
    return {"run_id": RUN, "url": URL, "seq": str(seq), "kind": kind, "final": "0",
            "body": '{"a":1,"seq":' + str(seq) + "}", "state": state, "attempts": str(attempts),
            "schedule_base": "0", "created_at": "40", "log": "[]", **more}


def events(*ids: str) -> list[str]:
    return [keys.webhook_event(event_id) for event_id in ids]


# -- outbox_record.lua ---------------------------------------------------------------------------

def record(client: redis.Redis, event_id: str = "e1", kind: str = "status", final: bool = False,
           declared: tuple[str, ...] = ()) -> Call:
    return run(client, scripts.OUTBOX_RECORD,
               [STATE, QUEUE, DUE, OUTSTANDING, GONE, RECORD, keys.webhook_event(event_id),
                *events(*declared)],
               [event_id, RUN, URL, kind, "1" if final else "0", NOW, INTERVAL, '{"a":1', TTL,
                *declared])


def recorded(seq: int, state: str, **more: str) -> dict:
    return event(seq, state, created_at=str(NOW), **more)


PENDING_PROGRESS = {STATE: {"seq": "1", "active": "e1"}, QUEUE: Z({"e1": 1}),
                    DUE: Z({"e1": 55}), OUTSTANDING: Z({"e1": 40}),
                    E1: event(1, "pending", kind="progress", next_at="55")}
RETRYING_STATUS = {RECORD: {"status": "running", "webhook_status": '"retrying"'},
                   STATE: {"seq": "1", "active": "e1"}, QUEUE: Z({"e1": 1}), DUE: Z({"e1": 60}),
                   OUTSTANDING: Z({"e1": 40}), E1: event(1, "pending", attempts=1, next_at="60")}


@cases(
    Case("first event: active and due now", {RECORD: {"status": "running"}}, {}, ["recorded", 1],
         {RECORD: {"status": "running", "webhook_status": '"pending"'},
          STATE: Expiring({"seq": "1", "active": "e1"}, TTL), QUEUE: Expiring(Z({"e1": 1}), TTL),
          DUE: Z({"e1": NOW}), OUTSTANDING: Z({"e1": NOW}),
          E1: recorded(1, "pending", next_at=str(NOW))}),
    Case("the run's final event was recorded before", {STATE: {"seq": "3", "final_seq": "3"}},
         {}, ["final"]),
    Case("the URL answered 410 Gone before", {RECORD: {"status": "running"}, GONE: {URL: "40"}},
         {}, ["gone"], {RECORD: {"status": "running", "webhook_status": '"gone"'},
                        GONE: {URL: "40"}}),
    Case("the queue's last event is not declared", PENDING_PROGRESS, {"event_id": "e2"},
         ["undeclared", "e1"]),
    Case("an unsent progress event makes way for a newer one", PENDING_PROGRESS,
         {"event_id": "e2", "declared": ("e1",)}, ["recorded", 2],
         {STATE: Expiring({"seq": "2", "active": "e2"}, TTL), QUEUE: Expiring(Z({"e2": 2}), TTL),
          DUE: Z({"e2": NOW}), OUTSTANDING: Z({"e2": NOW}),
          E2: recorded(2, "pending", next_at=str(NOW))}),
    Case("a status event stays, the new one waits behind it; 'retrying' stays",
         RETRYING_STATUS, {"event_id": "e2", "declared": ("e1",)}, ["recorded", 2],
         {**RETRYING_STATUS, STATE: Expiring({"seq": "2", "active": "e1"}, TTL),
          QUEUE: Expiring(Z({"e1": 1, "e2": 2}), TTL), OUTSTANDING: Z({"e1": 40, "e2": NOW}),
          E2: recorded(2, "waiting")}),
    Case("a progress event waits out the interval after the last send",
         {STATE: {"seq": "1", "last_sent": "45"}}, {"event_id": "e2", "kind": "progress"},
         ["recorded", 2],
         {STATE: Expiring({"seq": "2", "last_sent": "45", "active": "e2"}, TTL),
          QUEUE: Expiring(Z({"e2": 2}), TTL), DUE: Z({"e2": 55}), OUTSTANDING: Z({"e2": NOW}),
          E2: recorded(2, "pending", kind="progress", next_at="55")}),
    Case("the final event closes the run's outbox", {}, {"final": True}, ["recorded", 1],
         {STATE: Expiring({"seq": "1", "active": "e1", "final_seq": "1"}, TTL),
          QUEUE: Expiring(Z({"e1": 1}), TTL), DUE: Z({"e1": NOW}), OUTSTANDING: Z({"e1": NOW}),
          E1: recorded(1, "pending", final="1", next_at=str(NOW))}),
)
def test_outbox_record(fresh_redis, case):
    made = check(fresh_redis, case, record)
    assert_one_slot(made.keys, RUN, exempt=CROSS_RUN)


# -- outbox_start.lua ----------------------------------------------------------------------------

def start(client: redis.Redis) -> Call:
    made = run(client, scripts.OUTBOX_START, [E1, DUE, INFLIGHT, GONE], ["e1", NOW, LEASE_DEADLINE])
    reply = made.reply
    if reply[0] == "start":  # the event's fields, as a dict (a hash has no field order)
        reply = [*reply[:3], dict(zip(reply[3][::2], reply[3][1::2]))]
    return Call(made.keys, reply)


CLAIMED = {E1: event(1, "claimed", claimed_at="45", next_at="45"), INFLIGHT: Z({"e1": 60})}
STARTED = event(1, "delivering", attempts=1, claimed_at="45", next_at="45", started_at=str(NOW))


@cases(
    Case("missing event", {}, {}, ["skip", "missing"]),
    Case("claimed: the attempt starts", CLAIMED, {}, ["start", 1, 0, STARTED],
         {E1: STARTED, INFLIGHT: Z({"e1": LEASE_DEADLINE})}),
    Case("pending and due: the attempt starts",
         {E1: event(1, "pending", next_at="50"), DUE: Z({"e1": 50})}, {},
         ["start", 1, 0, event(1, "delivering", attempts=1, next_at="50", started_at=str(NOW))],
         {E1: event(1, "delivering", attempts=1, next_at="50", started_at=str(NOW)),
          INFLIGHT: Z({"e1": LEASE_DEADLINE})}),
    Case("pending, not yet due", {E1: event(1, "pending", next_at="60"), DUE: Z({"e1": 60})},
         {}, ["skip", "pending"]),
    Case("another task is delivering it", {E1: event(1, "delivering", attempts=1)}, {},
         ["skip", "delivering"]),
    Case("its URL answered 410 Gone before: started, and said so", {**CLAIMED, GONE: {URL: "40"}},
         {}, ["start", 1, 1, STARTED],
         {E1: STARTED, INFLIGHT: Z({"e1": LEASE_DEADLINE}), GONE: {URL: "40"}}),
)
def test_outbox_start(fresh_redis, case):
    check(fresh_redis, case, start)


# -- outbox_finish.lua ---------------------------------------------------------------------------

def finish(client: redis.Redis, verdict: str, code: str = "200", error: str = "",
           attempt: int = 1, declared: tuple[str, ...] = ()) -> Call:
    return run(client, scripts.OUTBOX_FINISH,
               [E1, STATE, QUEUE, DUE, INFLIGHT, OUTSTANDING, DELIVERED, DEAD, RUN_DEAD, ATTEMPTS,
                RECORD, GONE, OUTCOMES, *events(*declared)],
               ["e1", attempt, verdict, NOW, 70, '{"attempt":1}', '[{"attempt":1}]', INTERVAL,
                CLAIM_DEADLINE, DELIVERED_TTL, 100, code, error, TTL, 50, 45, *declared])


DELIVERING = {RECORD: {"status": "success"}, STATE: {"seq": "1", "active": "e1"},
              QUEUE: Z({"e1": 1}), INFLIGHT: Z({"e1": LEASE_DEADLINE}), OUTSTANDING: Z({"e1": 40}),
              E1: event(1, "delivering", attempts=1, next_at="40", started_at="45")}
WITH_NEXT = {**DELIVERING, STATE: {"seq": "2", "active": "e1"}, QUEUE: Z({"e1": 1, "e2": 2}),
             OUTSTANDING: Z({"e1": 40, "e2": 45}), E2: event(2, "waiting")}
#: What every settled attempt leaves: its record in the run's attempts and the event's log.
LOGGED = {ATTEMPTS: Expiring(L(['{"attempt":1}']), TTL)}


def run_record(word: str) -> dict:
    return {"status": "success", "webhook_attempts": '[{"attempt":1}]',
            "webhook_status": f'"{word}"'}


def settled(state: str, code: str, error: str, **more: str) -> dict:
    return event(1, state, attempts=1, next_at="40", started_at="45", log='[{"attempt":1}]',
                 finished_at=str(NOW), last_status_code=code, last_error=error, **more)


NEXT_CLAIMED = {E2: event(2, "claimed", claimed_at=str(NOW), next_at=str(NOW)),
                INFLIGHT: Z({"e2": CLAIM_DEADLINE}), QUEUE: Z({"e2": 2}),
                OUTSTANDING: Z({"e2": 45}),
                STATE: Expiring({"seq": "2", "active": "e2", "last_sent": "45"}, TTL)}
BURIED_BOTH = {STATE: Expiring({"seq": "2", "last_sent": "45"}, TTL),
               DEAD: Z({"e1": NOW, "e2": NOW}), RUN_DEAD: Z({"e1": 1, "e2": 2})}


@cases(
    Case("stale: another attempt holds the event",
         {**DELIVERING, E1: event(1, "delivering", attempts=2)}, {"verdict": "delivered"},
         ["stale", None]),
    Case("delivered, nothing behind it", DELIVERING, {"verdict": "delivered"},
         ["delivered", None],
         {**LOGGED, RECORD: run_record("delivered"), OUTCOMES: {"delivered": "1"},
          STATE: Expiring({"seq": "1", "last_sent": "45"}, TTL), DELIVERED: Z({"e1": NOW}),
          E1: Expiring(settled("delivered", "200", "", delivered_at=str(NOW)), DELIVERED_TTL)}),
    Case("delivered, the next event not declared", WITH_NEXT, {"verdict": "delivered"},
         ["undeclared", "e2"]),
    Case("delivered: the next event is claimed at once", WITH_NEXT,
         {"verdict": "delivered", "declared": ("e2",)}, ["pending", "e2"],
         {**LOGGED, **NEXT_CLAIMED, RECORD: run_record("pending"), DELIVERED: Z({"e1": NOW}),
          OUTCOMES: {"delivered": "1"},
          E1: Expiring(settled("delivered", "200", "", delivered_at=str(NOW)), DELIVERED_TTL)}),
    Case("retry: due again at its next time", DELIVERING,
         {"verdict": "retry", "code": "503", "error": "HTTP 503"}, ["retrying", None],
         {**LOGGED, RECORD: run_record("retrying"), QUEUE: Z({"e1": 1}),
          STATE: {"seq": "1", "active": "e1", "last_sent": "45"}, DUE: Z({"e1": 70}),
          OUTSTANDING: Z({"e1": 40}),
          E1: {**settled("pending", "503", "HTTP 503"), "next_at": "70"}}),
    Case("rejected: dead-lettered, the next event goes on", WITH_NEXT,
         {"verdict": "rejected", "code": "400", "error": "HTTP 400", "declared": ("e2",)},
         ["dead", "e2"],
         {**LOGGED, **NEXT_CLAIMED, RECORD: run_record("dead"), DEAD: Z({"e1": NOW}),
          OUTCOMES: {"dead": "1"},
          RUN_DEAD: Z({"e1": 1}), E1: settled("dead", "400", "HTTP 400", dead_at=str(NOW))}),
    Case("exhausted: the later events are dead-lettered with it", WITH_NEXT,
         {"verdict": "exhausted", "code": "503", "error": "HTTP 503", "declared": ("e2",)},
         ["dead", None],
         {**LOGGED, **BURIED_BOTH, RECORD: run_record("dead"), OUTCOMES: {"dead": "2"},
          E1: settled("dead", "503", "HTTP 503", dead_at=str(NOW)),
          E2: event(2, "dead", dead_at=str(NOW),
                    last_error="not attempted: event seq 1 exhausted its schedule")}),
    Case("exhausted, a later event not declared", WITH_NEXT,
         {"verdict": "exhausted", "code": "503", "error": "HTTP 503"}, ["undeclared", "e2"]),
    Case("gone: the URL is remembered, the later events are gone too", WITH_NEXT,
         {"verdict": "gone", "code": "410", "error": "HTTP 410", "declared": ("e2",)},
         ["gone", None],
         {**LOGGED, **BURIED_BOTH, RECORD: run_record("gone"), GONE: {URL: str(NOW)},
          OUTCOMES: {"gone": "2"},
          E1: settled("gone", "410", "HTTP 410", dead_at=str(NOW)),
          E2: event(2, "gone", dead_at=str(NOW),
                    last_error="not sent: the URL answered 410 Gone")}),
)
def test_outbox_finish(fresh_redis, case):
    made = check(fresh_redis, case, finish)
    assert_one_slot(made.keys, RUN, exempt=CROSS_RUN)


# -- outbox_claim.lua and outbox_unclaim.lua -----------------------------------------------------

def claim(client: redis.Redis) -> Call:
    return run(client, scripts.OUTBOX_CLAIM, [DUE, INFLIGHT, E1],
               [NOW, CLAIM_DEADLINE, LEASE_DEADLINE, "e1"])


@cases(
    Case("due and pending: claimed", {DUE: Z({"e1": 45}), E1: event(1, "pending")}, {},
         [["e1"], [], []],
         {INFLIGHT: Z({"e1": CLAIM_DEADLINE}), E1: event(1, "claimed", claimed_at=str(NOW))}),
    Case("due but no longer pending: dropped from due",
         {DUE: Z({"e1": 45}), E1: event(1, "delivered")}, {}, [[], [], []],
         {E1: event(1, "delivered")}),
    Case("not due yet (or taken meanwhile): left alone",
         {DUE: Z({"e1": 60}), E1: event(1, "pending")}, {}, [[], [], []]),
    Case("claimed, its task never started: claimed again",
         {INFLIGHT: Z({"e1": 40}), E1: event(1, "claimed", claimed_at="10")}, {},
         [["e1"], [], []],
         {INFLIGHT: Z({"e1": CLAIM_DEADLINE}), E1: event(1, "claimed", claimed_at=str(NOW))}),
    Case("delivering past its lease: reported lost",
         {INFLIGHT: Z({"e1": 40}), E1: event(1, "delivering", attempts=2)}, {},
         [[], ["e1"], ["2"]],
         {INFLIGHT: Z({"e1": LEASE_DEADLINE}), E1: event(1, "delivering", attempts=2)}),
    Case("settled meanwhile: dropped from in-flight",
         {INFLIGHT: Z({"e1": 40}), E1: event(1, "delivered")}, {}, [[], [], []],
         {E1: event(1, "delivered")}),
    Case("in flight within its deadline: left alone",
         {INFLIGHT: Z({"e1": 70}), E1: event(1, "delivering", attempts=1)}, {}, [[], [], []]),
)
def test_outbox_claim(fresh_redis, case):
    check(fresh_redis, case, claim)


def unclaim(client: redis.Redis) -> Call:
    return run(client, scripts.OUTBOX_UNCLAIM, [E1, INFLIGHT, DUE], ["e1", NOW])


@cases(
    Case("claimed: back to due now", {INFLIGHT: Z({"e1": 90}), E1: event(1, "claimed")}, {}, 1,
         {DUE: Z({"e1": NOW}), E1: event(1, "pending", next_at=str(NOW))}),
    Case("no longer claimed: left alone",
         {INFLIGHT: Z({"e1": 90}), E1: event(1, "delivering", attempts=1)}, {}, 0),
)
def test_outbox_unclaim(fresh_redis, case):
    check(fresh_redis, case, unclaim)


# -- outbox_redeliver.lua ------------------------------------------------------------------------

def redeliver(client: redis.Redis, declared: tuple[str, ...] = ()) -> Call:
    return run(client, scripts.OUTBOX_REDELIVER,
               [RUN_DEAD, QUEUE, STATE, DUE, DEAD, OUTSTANDING, GONE, RECORD, *events(*declared)],
               [NOW, INTERVAL, TTL, *declared])


BOTH_DEAD = {
    RECORD: {"status": "success", "webhook_status": '"dead"'}, STATE: {"seq": "2"},
    RUN_DEAD: Z({"e1": 1, "e2": 2}), DEAD: Z({"e1": 45, "e2": 45, "other": 30}),
    GONE: {URL: "44", "https://else.example": "1"},
    E1: event(1, "dead", attempts=4, next_at="40", dead_at="45"),
    E2: event(2, "dead", dead_at="45", last_error="not attempted"),
}

REDELIVERED = {
    RECORD: {"status": "success", "webhook_status": '"pending"'},
    STATE: Expiring({"seq": "2", "active": "e1"}, TTL), QUEUE: Expiring(Z({"e1": 1, "e2": 2}), TTL),
    DUE: Z({"e1": NOW}), OUTSTANDING: Z({"e1": NOW, "e2": NOW}), DEAD: Z({"other": 30}),
    GONE: {"https://else.example": "1"},
    E1: event(1, "pending", attempts=4, schedule_base="4", next_at=str(NOW)),
    E2: event(2, "waiting", last_error="not attempted"),
}


@cases(
    Case("nothing dead-lettered", {STATE: {"seq": "1"}}, {}, ["requeued", 0]),
    Case("dead-lettered events not declared", BOTH_DEAD, {}, ["undeclared", "e1", "e2"]),
    Case("dead-lettered events come back in order, the first one active", BOTH_DEAD,
         {"declared": ("e1", "e2")}, ["requeued", 2], REDELIVERED),
)
def test_outbox_redeliver(fresh_redis, case):
    made = check(fresh_redis, case, redeliver)
    assert_one_slot(made.keys, RUN, exempt=CROSS_RUN)


def test_the_caller_declares_the_events_a_script_names(fresh_redis):
    """comfyq.webhooks.scripts calls a script again with the events it named."""
    def through_the_caller(client: redis.Redis) -> Call:
        requeued = outbox_scripts.redeliver(client, RUN, [NOW, INTERVAL, TTL])
        return Call([RUN_DEAD, QUEUE, STATE, DUE, DEAD, OUTSTANDING, GONE, RECORD, E1, E2],
                    requeued)
    check(fresh_redis, Case("redeliver", BOTH_DEAD, {}, 2, REDELIVERED), through_the_caller)
