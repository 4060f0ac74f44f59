-- outbox_redeliver.lua: re-queue a run's dead-lettered and gone events, in seq order, each with
-- a fresh schedule (outbox redeliver). Prepended by outbox_library.lua.
--
-- KEYS: [1] run dead letters, [2] run queue, [3] run outbox state, [4] WEBHOOKS_DUE,
--   [5] WEBHOOKS_DEAD, [6] WEBHOOKS_OUTSTANDING, [7] WEBHOOKS_GONE_URLS, [8] run record; then
--   declared events (the dead-lettered ones, and the queue's first when none is active).
-- ARGV: [1] now, [2] progress interval (s), [3] TTL of the run's outbox keys (s); then the
--   declared events' ids.
-- Returns {'requeued', how many events} or {'undeclared', id...}.

local run_dead, queue, run_state, due_key, dead, outstanding, gone, run_record =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local now = tonumber(ARGV[1])
local events = declared_events(8)
local ids = redis.call('ZRANGE', run_dead, 0, -1)
local needed = {unpack(ids)}
if #ids > 0 and not redis.call('HGET', run_state, 'active') then
  table.insert(needed, redis.call('ZRANGE', queue, 0, 0)[1])
end
local missing = undeclared(events, needed)
if #missing > 0 then return {'undeclared', unpack(missing)} end

for _, id in ipairs(ids) do
  local event = events[id]
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
if #ids == 0 then return {'requeued', 0} end
if not redis.call('HGET', run_state, 'active') then
  local head = redis.call('ZRANGE', queue, 0, 0)[1]
  activate(events, run_state, due_key, nil, head, now, tonumber(ARGV[2]), nil)
end
set_run_field(run_record, 'webhook_status', '"pending"')
redis.call('EXPIRE', run_state, tonumber(ARGV[3]))
redis.call('EXPIRE', queue, tonumber(ARGV[3]))
return {'requeued', #ids}
