-- outbox_unclaim.lua: put a claimed event back to due now, because handing it to a delivery
-- task failed (outbox enqueue_due).
--
-- KEYS: [1] the event, [2] WEBHOOKS_INFLIGHT, [3] WEBHOOKS_DUE.
-- ARGV: [1] event id, [2] now.
-- Returns 1 when put back, 0 when the event was no longer claimed.

if redis.call('HGET', KEYS[1], 'state') ~= 'claimed' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'next_at', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
