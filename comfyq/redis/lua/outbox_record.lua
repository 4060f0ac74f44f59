-- outbox_record.lua: record a run's new webhook event behind its earlier ones (outbox
-- record_event). Prepended by outbox_library.lua.
--
-- KEYS: [1] run outbox state, [2] run queue, [3] WEBHOOKS_DUE, [4] WEBHOOKS_OUTSTANDING,
--   [5] WEBHOOKS_GONE_URLS, [6] run record, [7] the new event; then declared events (the
--   queue's last event, which a newer event may replace).
-- ARGV: [1] event id, [2] run id, [3] url, [4] kind ('status'|'progress'), [5] final ('1'/'0'),
--   [6] now, [7] progress interval (s), [8] body without its closing brace, [9] TTL of the run's
--   outbox keys (s); then the declared events' ids.
-- Returns {'recorded', seq}, {'final'} (the run's final event was recorded before), {'gone'}
-- (the URL answered 410 Gone before) or {'undeclared', id...}.

local run_state, queue, due_key, outstanding, gone, run_record, event =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id, run_id, url, kind, final = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, interval, ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[9])
local events = declared_events(7)
events[id] = event
if redis.call('HEXISTS', run_state, 'final_seq') == 1 then return {'final'} end
if redis.call('HEXISTS', gone, url) == 1 then
  set_run_field(run_record, 'webhook_status', '"gone"')
  return {'gone'}
end
local tail = redis.call('ZRANGE', queue, -1, -1)[1]
if tail and not events[tail] then return {'undeclared', tail} end
local seq = redis.call('HINCRBY', run_state, 'seq', 1)

-- A progress-only event nobody has tried to send yet is redundant once a newer event follows
-- it (every body is a full snapshot), so it makes way; a status change is never removed.
if tail then
  local t = redis.call('HMGET', events[tail], 'kind', 'state', 'attempts')
  if t[1] == 'progress' and t[3] == '0' and (t[2] == 'waiting' or t[2] == 'pending') then
    redis.call('ZREM', queue, tail)
    redis.call('ZREM', due_key, tail)
    redis.call('ZREM', outstanding, tail)
    redis.call('DEL', events[tail])
    if redis.call('HGET', run_state, 'active') == tail then
      redis.call('HDEL', run_state, 'active')
    end
  end
end

-- The seq is only known here, so the body is completed here (the caller sent it without its
-- closing brace); the bytes stored are the bytes every attempt sends and signs.
redis.call('HSET', event, 'run_id', run_id, 'url', url, 'seq', seq, 'kind', kind,
  'final', final, 'body', ARGV[8] .. ',"seq":' .. seq .. '}', 'state', 'waiting',
  'attempts', 0, 'schedule_base', 0, 'created_at', ARGV[6], 'log', '[]')
redis.call('ZADD', queue, seq, id)
redis.call('ZADD', outstanding, now, id)
if final == '1' then redis.call('HSET', run_state, 'final_seq', seq) end
if not redis.call('HGET', run_state, 'active') then
  activate(events, run_state, due_key, nil, id, now, interval, nil)
end
if redis.call('HGET', run_record, 'webhook_status') ~= '"retrying"' then
  set_run_field(run_record, 'webhook_status', '"pending"')
end
redis.call('EXPIRE', run_state, ttl)
redis.call('EXPIRE', queue, ttl)
return {'recorded', seq}
