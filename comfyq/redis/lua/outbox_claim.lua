-- outbox_claim.lua: claim due events for delivery tasks, and find attempts that outlived their
-- lease (outbox enqueue_due). The caller read the candidates (due events and expired in-flight
-- deadlines) just before; each is checked again here, so concurrent callers never claim one
-- event twice. Prepended by outbox_library.lua.
--
-- KEYS: [1] WEBHOOKS_DUE, [2] WEBHOOKS_INFLIGHT; then declared events (the candidates).
-- ARGV: [1] now, [2] claim deadline, [3] lease deadline of a lost attempt's next check; then the
--   declared events' ids, due ones first.
-- Returns {claimed ids, lost ids, lost attempts}: a due event is claimed; a claimed event whose
-- task never started is claimed again; an attempt past its lease is reported lost.

local due_key, inflight = KEYS[1], KEYS[2]
local now, claim_deadline = tonumber(ARGV[1]), ARGV[2]
local events = declared_events(2)
local claimed, lost, lost_attempts = {}, {}, {}
local function passed(set, id)
  local score = redis.call('ZSCORE', set, id)
  return score and tonumber(score) <= now
end
for index = 4, #ARGV do
  local id = ARGV[index]
  local event = events[id]
  if passed(due_key, id) then
    redis.call('ZREM', due_key, id)
    if redis.call('HGET', event, 'state') == 'pending' then
      redis.call('HSET', event, 'state', 'claimed', 'claimed_at', ARGV[1])
      redis.call('ZADD', inflight, claim_deadline, id)
      table.insert(claimed, id)
    end
  elseif passed(inflight, id) then
    local f = redis.call('HMGET', event, 'state', 'attempts')
    if f[1] == 'claimed' then
      redis.call('HSET', event, 'claimed_at', ARGV[1])
      redis.call('ZADD', inflight, claim_deadline, id)
      table.insert(claimed, id)
    elseif f[1] == 'delivering' then
      redis.call('ZADD', inflight, ARGV[3], id)
      table.insert(lost, id)
      table.insert(lost_attempts, f[2])
    else
      redis.call('ZREM', inflight, id)
    end
  end
end
return {claimed, lost, lost_attempts}
