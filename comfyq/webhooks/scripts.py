"""The outbox's state changes, each one a Lua script so that it is atomic in Redis.

Atomicity is what makes the outbox safe with many callers: two schedulers never claim the same
due event, a delivery finishing late never overwrites a newer attempt, and a run's next event is
released in the same step that settles the previous one.

An event's `state` moves through::

    waiting -> pending -> claimed -> delivering -> delivered
       (behind    (due at     (handed to   (one attempt  \\-> pending (retry) / dead / gone
       an earlier  next_at)    a task)      running)
       event)

Only a run's *active* event is ever pending, claimed or delivering; the others wait in the run's
queue (a sorted set by seq), which is how deliveries of one run stay in seq order, one at a time.
Every script gets the event key prefix as ARGV[1] so that key names live only in comfyq.redis.keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

#: Helpers shared by the scripts (prepended to each).
_LIBRARY = r"""
local prefix = ARGV[1]

local function set_run_field(run_record, name, json_value)
  if redis.call('EXISTS', run_record) == 1 then
    redis.call('HSET', run_record, name, json_value)
  end
end

-- Makes `id` its run's active event. A progress-only event waits until `interval` seconds after
-- the run's previous send. When `claim_deadline` is given and it is due now, it is claimed at
-- once and its id returned (the caller hands it to a delivery task); else it goes to `due`.
local function activate(run_state, due_key, inflight_key, id, now, interval, claim_deadline)
  local event = prefix .. id
  local due = now
  if redis.call('HGET', event, 'kind') == 'progress' then
    local last = tonumber(redis.call('HGET', run_state, 'last_sent') or '0')
    if last + interval > due then due = last + interval end
  end
  redis.call('HSET', run_state, 'active', id)
  redis.call('HSET', event, 'next_at', tostring(due))
  if claim_deadline and due <= now then
    redis.call('HSET', event, 'state', 'claimed', 'claimed_at', tostring(now))
    redis.call('ZADD', inflight_key, claim_deadline, id)
    return id
  end
  redis.call('HSET', event, 'state', 'pending')
  redis.call('ZADD', due_key, due, id)
  return false
end

-- Moves `id` out of every delivery structure into the dead-letter indexes as `word`.
local function bury(keys, id, word, now, note)
  local event = prefix .. id
  redis.call('HSET', event, 'state', word, 'dead_at', tostring(now))
  if note then redis.call('HSET', event, 'last_error', note) end
  redis.call('ZREM', keys.due, id)
  redis.call('ZREM', keys.inflight, id)
  redis.call('ZREM', keys.queue, id)
  redis.call('ZREM', keys.outstanding, id)
  redis.call('ZADD', keys.dead, now, id)
  redis.call('ZADD', keys.run_dead, tonumber(redis.call('HGET', event, 'seq')), id)
end
"""

#: KEYS: run state, run queue, due, outstanding, gone URLs, run record.
#: ARGV: prefix, event id, run id, url, kind, final ('1'/'0'), now, interval, body without its
#: closing brace, ttl. Returns {seq} or {0, reason}.
RECORD = _LIBRARY + r"""
local run_state, queue, due_key, outstanding, gone, run_record =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, run_id, url, kind, final = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, interval, ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[10])
if redis.call('HEXISTS', run_state, 'final_seq') == 1 then return {0, 'final'} end
if redis.call('HEXISTS', gone, url) == 1 then
  set_run_field(run_record, 'webhook_status', '"gone"')
  return {0, 'gone'}
end
local seq = redis.call('HINCRBY', run_state, 'seq', 1)

-- A progress-only event nobody has tried to send yet is redundant once a newer event follows
-- it (every body is a full snapshot), so it makes way; a status change is never removed.
local tail = redis.call('ZRANGE', queue, -1, -1)[1]
if tail then
  local t = redis.call('HMGET', prefix .. tail, 'kind', 'state', 'attempts')
  if t[1] == 'progress' and t[3] == '0' and (t[2] == 'waiting' or t[2] == 'pending') then
    redis.call('ZREM', queue, tail)
    redis.call('ZREM', due_key, tail)
    redis.call('ZREM', outstanding, tail)
    redis.call('DEL', prefix .. tail)
    if redis.call('HGET', run_state, 'active') == tail then
      redis.call('HDEL', run_state, 'active')
    end
  end
end

-- The seq is only known here, so the body is completed here (the caller sent it without its
-- closing brace); the bytes stored are the bytes every attempt sends and signs.
redis.call('HSET', prefix .. id, 'run_id', run_id, 'url', url, 'seq', seq, 'kind', kind,
  'final', final, 'body', ARGV[9] .. ',"seq":' .. seq .. '}', 'state', 'waiting',
  'attempts', 0, 'schedule_base', 0, 'created_at', ARGV[7], 'log', '[]')
redis.call('ZADD', queue, seq, id)
redis.call('ZADD', outstanding, now, id)
if final == '1' then redis.call('HSET', run_state, 'final_seq', seq) end
if not redis.call('HGET', run_state, 'active') then
  activate(run_state, due_key, nil, id, now, interval, nil)
end
if redis.call('HGET', run_record, 'webhook_status') ~= '"retrying"' then
  set_run_field(run_record, 'webhook_status', '"pending"')
end
redis.call('EXPIRE', run_state, ttl)
redis.call('EXPIRE', queue, ttl)
return {seq}
"""

#: KEYS: event, due, inflight, gone URLs. ARGV: prefix, event id, now, lease deadline, run state
#: key prefix. Returns {'start', attempt, url_gone, fields...} or {'skip', state}.
START = _LIBRARY + r"""
local event, due_key, inflight, gone = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, now = ARGV[2], tonumber(ARGV[3])
local f = redis.call('HMGET', event, 'state', 'next_at', 'run_id', 'url')
local state = f[1]
if not state then return {'skip', 'missing'} end
local due_now = state == 'pending' and (tonumber(f[2]) or 0) <= now
if state ~= 'claimed' and not due_now then return {'skip', state} end
local attempt = redis.call('HINCRBY', event, 'attempts', 1)
redis.call('HSET', event, 'state', 'delivering', 'started_at', ARGV[3])
redis.call('ZREM', due_key, id)
redis.call('ZADD', inflight, ARGV[4], id)
redis.call('HSET', ARGV[5] .. f[3], 'last_sent', ARGV[3])
return {'start', attempt, redis.call('HEXISTS', gone, f[4]), redis.call('HGETALL', event)}
"""

#: KEYS: event, run state, run queue, due, inflight, outstanding, delivered index, dead index,
#: run dead, run attempts, run record, gone URLs.
#: ARGV: prefix, event id, attempt, verdict (delivered|retry|rejected|exhausted|gone), now,
#: next_at, attempt record JSON, event log JSON, interval, claim deadline, delivered TTL,
#: delivered index size, status code ('' if none), error ('' if none), run keys TTL, how many
#: attempts the run record keeps.
#: Returns {webhook status word, next event id or false} or {'stale', false}.
FINISH = _LIBRARY + r"""
local k = {event = KEYS[1], run_state = KEYS[2], queue = KEYS[3], due = KEYS[4],
  inflight = KEYS[5], outstanding = KEYS[6], delivered = KEYS[7], dead = KEYS[8],
  run_dead = KEYS[9], attempts = KEYS[10], run_record = KEYS[11], gone = KEYS[12]}
local id, verdict, now = ARGV[2], ARGV[4], tonumber(ARGV[5])
local f = redis.call('HMGET', k.event, 'state', 'attempts', 'url', 'seq')
-- Only the attempt that holds the event may settle it: a worker that was presumed lost and
-- finishes after all must not overwrite what happened since.
if f[1] ~= 'delivering' or f[2] ~= ARGV[3] then return {'stale', false} end
redis.call('HSET', k.event, 'log', ARGV[8], 'finished_at', ARGV[5],
  'last_status_code', ARGV[13], 'last_error', ARGV[14])
redis.call('ZREM', k.inflight, id)

redis.call('RPUSH', k.attempts, ARGV[7])
redis.call('LTRIM', k.attempts, -tonumber(ARGV[16]), -1)
redis.call('EXPIRE', k.attempts, tonumber(ARGV[15]))
set_run_field(k.run_record, 'webhook_attempts',
  '[' .. table.concat(redis.call('LRANGE', k.attempts, 0, -1), ',') .. ']')

if verdict == 'retry' then
  redis.call('HSET', k.event, 'state', 'pending', 'next_at', ARGV[6])
  redis.call('ZADD', k.due, tonumber(ARGV[6]), id)
  set_run_field(k.run_record, 'webhook_status', '"retrying"')
  return {'retrying', false}
end

redis.call('ZREM', k.queue, id)
redis.call('ZREM', k.outstanding, id)
if redis.call('HGET', k.run_state, 'active') == id then
  redis.call('HDEL', k.run_state, 'active')
end
local word
if verdict == 'delivered' then
  word = 'delivered'
  redis.call('HSET', k.event, 'state', 'delivered', 'delivered_at', ARGV[5])
  redis.call('EXPIRE', k.event, tonumber(ARGV[11]))
  redis.call('ZADD', k.delivered, now, id)
  redis.call('ZREMRANGEBYRANK', k.delivered, 0, -tonumber(ARGV[12]) - 1)
elseif verdict == 'gone' then
  word = 'gone'
  redis.call('HSET', k.gone, f[3], ARGV[5])
  bury(k, id, 'gone', now, nil)
  for _, other in ipairs(redis.call('ZRANGE', k.queue, 0, -1)) do
    bury(k, other, 'gone', now, 'not sent: the URL answered 410 Gone')
  end
else
  word = 'dead'
  bury(k, id, 'dead', now, nil)
  if verdict == 'exhausted' then
    -- The receiver failed for the whole schedule; the run's later events would only repeat
    -- it, so they are dead-lettered with it and come back together, in order, on redelivery.
    for _, other in ipairs(redis.call('ZRANGE', k.queue, 0, -1)) do
      bury(k, other, 'dead', now, 'not attempted: event seq ' .. f[4] .. ' exhausted its schedule')
    end
  end
end

local next_id = false
local head = redis.call('ZRANGE', k.queue, 0, 0)[1]
if head and not redis.call('HGET', k.run_state, 'active') then
  next_id = activate(k.run_state, k.due, k.inflight, head, now, tonumber(ARGV[9]), ARGV[10])
  if word == 'delivered' then word = 'pending' end
end
set_run_field(k.run_record, 'webhook_status', '"' .. word .. '"')
if redis.call('EXISTS', k.run_state) == 1 then
  redis.call('EXPIRE', k.run_state, tonumber(ARGV[15]))
end
return {word, next_id}
"""

#: KEYS: due, inflight. ARGV: prefix, now, claim deadline, limit, lease deadline.
#: Returns {claimed ids, lost ids, lost attempts}: due events are claimed; claimed events whose
#: task never started are claimed again; attempts that outlived their lease are reported lost.
CLAIM = _LIBRARY + r"""
local due_key, inflight = KEYS[1], KEYS[2]
local now, claim_deadline, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local claimed, lost, lost_attempts = {}, {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', due_key, id)
  if redis.call('HGET', prefix .. id, 'state') == 'pending' then
    redis.call('HSET', prefix .. id, 'state', 'claimed', 'claimed_at', now)
    redis.call('ZADD', inflight, claim_deadline, id)
    table.insert(claimed, id)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, limit)) do
  local f = redis.call('HMGET', prefix .. id, 'state', 'attempts')
  if f[1] == 'claimed' then
    redis.call('HSET', prefix .. id, 'claimed_at', now)
    redis.call('ZADD', inflight, claim_deadline, id)
    table.insert(claimed, id)
  elseif f[1] == 'delivering' then
    redis.call('ZADD', inflight, ARGV[5], id)
    table.insert(lost, id)
    table.insert(lost_attempts, f[2])
  else
    redis.call('ZREM', inflight, id)
  end
end
return {claimed, lost, lost_attempts}
"""

#: KEYS: inflight, due. ARGV: prefix, event id, now. Puts a claimed event back to due now
#: (its hand-off to a task failed).
UNCLAIM = _LIBRARY + r"""
if redis.call('HGET', prefix .. ARGV[2], 'state') ~= 'claimed' then return 0 end
redis.call('HSET', prefix .. ARGV[2], 'state', 'pending', 'next_at', ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""

#: KEYS: run dead, run queue, run state, due, dead index, outstanding, gone URLs, run record.
#: ARGV: prefix, now, interval, ttl. Returns how many events were re-queued.
REDELIVER = _LIBRARY + r"""
local run_dead, queue, run_state, due_key, dead, outstanding, gone, run_record =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local now = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', run_dead, 0, -1)
for _, id in ipairs(ids) do
  local event = prefix .. id
  local f = redis.call('HMGET', event, 'seq', 'url', 'attempts')
  -- A fresh schedule: attempts made so far stay in the log but no longer count against it.
  redis.call('HSET', event, 'state', 'waiting', 'schedule_base', f[3])
  redis.call('HDEL', event, 'next_at', 'dead_at')
  redis.call('HDEL', gone, f[2])
  redis.call('ZADD', queue, tonumber(f[1]), id)
  redis.call('ZADD', outstanding, now, id)
  redis.call('ZREM', dead, id)
end
redis.call('DEL', run_dead)
if #ids == 0 then return 0 end
if not redis.call('HGET', run_state, 'active') then
  local head = redis.call('ZRANGE', queue, 0, 0)[1]
  activate(run_state, due_key, nil, head, now, tonumber(ARGV[3]), nil)
end
set_run_field(run_record, 'webhook_status', '"pending"')
redis.call('EXPIRE', run_state, tonumber(ARGV[4]))
redis.call('EXPIRE', queue, tonumber(ARGV[4]))
return #ids
"""


class LuaScript:
    """A Lua script run by its SHA1, loaded into whichever server lacks it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def __call__(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)


record_script = LuaScript(RECORD)
start_script = LuaScript(START)
finish_script = LuaScript(FINISH)
claim_script = LuaScript(CLAIM)
unclaim_script = LuaScript(UNCLAIM)
redeliver_script = LuaScript(REDELIVER)
