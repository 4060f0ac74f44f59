-- outbox_start.lua: begin one delivery attempt of an event that is claimed or due (outbox
-- deliver_event); the attempt holds the event until its lease deadline.
--
-- KEYS: [1] the event, [2] WEBHOOKS_DUE, [3] WEBHOOKS_INFLIGHT, [4] WEBHOOKS_GONE_URLS.
-- ARGV: [1] event id, [2] now, [3] the attempt's lease deadline.
-- Returns {'start', attempt number, 1 when the event's URL answered 410 Gone before else 0,
-- the event's fields (flat name/value list)} or {'skip', its state ('missing' when none)}.

local event, due_key, inflight, gone = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, now = ARGV[1], tonumber(ARGV[2])
local f = redis.call('HMGET', event, 'state', 'next_at', 'url')
local state = f[1]
if not state then return {'skip', 'missing'} end
local due_now = state == 'pending' and (tonumber(f[2]) or 0) <= now
if state ~= 'claimed' and not due_now then return {'skip', state} end
local attempt = redis.call('HINCRBY', event, 'attempts', 1)
redis.call('HSET', event, 'state', 'delivering', 'started_at', ARGV[2])
redis.call('ZREM', due_key, id)
redis.call('ZADD', inflight, ARGV[3], id)
return {'start', attempt, redis.call('HEXISTS', gone, f[3]), redis.call('HGETALL', event)}
