-- outbox_finish.lua: settle one delivery attempt (outbox deliver_event): schedule the event's
-- next attempt, or mark it delivered, dead or gone and make the run's next event active.
-- Prepended by outbox_library.lua.
--
-- KEYS: [1] the event, [2] run outbox state, [3] run queue, [4] WEBHOOKS_DUE,
--   [5] WEBHOOKS_INFLIGHT, [6] WEBHOOKS_OUTSTANDING, [7] WEBHOOKS_DELIVERED, [8] WEBHOOKS_DEAD,
--   [9] run dead letters, [10] run attempts, [11] run record, [12] WEBHOOKS_GONE_URLS,
--   [13] WEBHOOK_METRICS; then declared events (the run's later events: the next one to activate, or all of them when
--   this verdict buries them too).
-- ARGV: [1] event id, [2] attempt number, [3] verdict (delivered|retry|rejected|exhausted|gone),
--   [4] now, [5] next attempt's time (retry), [6] attempt record JSON, [7] event log JSON,
--   [8] progress interval (s), [9] claim deadline of the next event, [10] TTL of a delivered
--   event (s), [11] size of WEBHOOKS_DELIVERED, [12] status code ('' = none), [13] error
--   ('' = none), [14] TTL of the run's outbox keys (s), [15] attempts the run record keeps,
--   [16] when the attempt was sent; then the declared events' ids.
-- Returns {webhook status word, the next event's id when it was claimed at once, else false},
-- {'stale', false} (this attempt no longer holds the event) or {'undeclared', id...}.

local k = {event = KEYS[1], run_state = KEYS[2], queue = KEYS[3], due = KEYS[4],
  inflight = KEYS[5], outstanding = KEYS[6], delivered = KEYS[7], dead = KEYS[8],
  run_dead = KEYS[9], attempts = KEYS[10], run_record = KEYS[11], gone = KEYS[12],
  outcomes = KEYS[13]}
local id, verdict, now = ARGV[1], ARGV[3], tonumber(ARGV[4])
local events = declared_events(13)
events[id] = k.event
local f = redis.call('HMGET', k.event, 'state', 'attempts', 'url', 'seq')
-- Only the attempt that holds the event may settle it: a worker that was presumed lost and
-- finishes after all must not overwrite what happened since.
if f[1] ~= 'delivering' or f[2] ~= ARGV[2] then return {'stale', false} end

local buries_rest = verdict == 'gone' or verdict == 'exhausted'
local rest = {}
if verdict ~= 'retry' then
  for _, other in ipairs(redis.call('ZRANGE', k.queue, 0, -1)) do
    if other ~= id then table.insert(rest, other) end
  end
  local active = redis.call('HGET', k.run_state, 'active')
  local next_active = not buries_rest and rest[1] and (not active or active == id)
  local needed = buries_rest and rest or (next_active and {rest[1]} or {})
  local missing = undeclared(events, needed)
  if #missing > 0 then return {'undeclared', unpack(missing)} end
end

-- The run's previous send, which spaces its progress-only events.
redis.call('HSET', k.run_state, 'last_sent', ARGV[16])
redis.call('HSET', k.event, 'log', ARGV[7], 'finished_at', ARGV[4],
  'last_status_code', ARGV[12], 'last_error', ARGV[13])
redis.call('ZREM', k.inflight, id)

redis.call('RPUSH', k.attempts, ARGV[6])
redis.call('LTRIM', k.attempts, -tonumber(ARGV[15]), -1)
redis.call('EXPIRE', k.attempts, tonumber(ARGV[14]))
set_run_field(k.run_record, 'webhook_attempts',
  '[' .. table.concat(redis.call('LRANGE', k.attempts, 0, -1), ',') .. ']')

if verdict == 'retry' then
  redis.call('HSET', k.event, 'state', 'pending', 'next_at', ARGV[5])
  redis.call('ZADD', k.due, tonumber(ARGV[5]), id)
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
  redis.call('HSET', k.event, 'state', 'delivered', 'delivered_at', ARGV[4])
  redis.call('HINCRBY', k.outcomes, 'delivered', 1)
  redis.call('EXPIRE', k.event, tonumber(ARGV[10]))
  redis.call('ZADD', k.delivered, now, id)
  redis.call('ZREMRANGEBYRANK', k.delivered, 0, -tonumber(ARGV[11]) - 1)
elseif verdict == 'gone' then
  word = 'gone'
  redis.call('HSET', k.gone, f[3], ARGV[4])
  bury(k, events, id, 'gone', now, nil)
  for _, other in ipairs(rest) do
    bury(k, events, other, 'gone', now, 'not sent: the URL answered 410 Gone')
  end
else
  word = 'dead'
  bury(k, events, id, 'dead', now, nil)
  if verdict == 'exhausted' then
    -- The receiver failed for the whole schedule; the run's later events would only repeat
    -- it, so they are dead-lettered with it and come back together, in order, on redelivery.
    for _, other in ipairs(rest) do
      bury(k, events, other, 'dead', now,
        'not attempted: event seq ' .. f[4] .. ' exhausted its schedule')
    end
  end
end

local next_id = false
local head = redis.call('ZRANGE', k.queue, 0, 0)[1]
if head and not redis.call('HGET', k.run_state, 'active') then
  next_id = activate(events, k.run_state, k.due, k.inflight, head, now, tonumber(ARGV[8]),
    ARGV[9])
  if word == 'delivered' then word = 'pending' end
end
set_run_field(k.run_record, 'webhook_status', '"' .. word .. '"')
if redis.call('EXISTS', k.run_state) == 1 then
  redis.call('EXPIRE', k.run_state, tonumber(ARGV[14]))
end
return {word, next_id}
