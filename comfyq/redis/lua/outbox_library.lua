-- outbox_library.lua: helpers shared by the webhook outbox scripts (prepended to each of them
-- that touches more than its one event; see comfyq.webhooks.scripts).
--
-- Declared events: a script that follows a run's queue may touch event hashes it only finds
-- while it runs. Each such event's key is declared by the caller: the script's own KEYS come
-- first, then one key per declared event; its own ARGV first, then the ids of those events, in
-- the same order. The script works out which events it needs before it writes anything and
-- answers {'undeclared', id...} when one is missing, so that the caller asks again with them.

-- id -> key of every event declared after the script's `own_keys` keys.
local function declared_events(own_keys)
  local events = {}
  local count = #KEYS - own_keys
  for index = 1, count do
    events[ARGV[#ARGV - count + index]] = KEYS[own_keys + index]
  end
  return events
end

-- The ids in `ids` that have no declared key.
local function undeclared(events, ids)
  local missing = {}
  for _, id in ipairs(ids) do
    if not events[id] then table.insert(missing, id) end
  end
  return missing
end

local function set_run_field(run_record, name, json_value)
  if redis.call('EXISTS', run_record) == 1 then
    redis.call('HSET', run_record, name, json_value)
  end
end

-- Makes `id` its run's active event. A progress-only event waits until `interval` seconds after
-- the run's previous send. When `claim_deadline` is given and it is due now, it is claimed at
-- once and its id returned (the caller hands it to a delivery task); else it goes to `due`.
local function activate(events, run_state, due_key, inflight_key, id, now, interval,
                        claim_deadline)
  local event = events[id]
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

-- Moves `id` out of every delivery structure into the dead-letter indexes as `word`, and counts
-- it in k.outcomes (comfyq.metrics).
local function bury(k, events, id, word, now, note)
  local event = events[id]
  redis.call('HINCRBY', k.outcomes, word, 1)
  redis.call('HSET', event, 'state', word, 'dead_at', tostring(now))
  if note then redis.call('HSET', event, 'last_error', note) end
  redis.call('ZREM', k.due, id)
  redis.call('ZREM', k.inflight, id)
  redis.call('ZREM', k.queue, id)
  redis.call('ZREM', k.outstanding, id)
  redis.call('ZADD', k.dead, now, id)
  redis.call('ZADD', k.run_dead, tonumber(redis.call('HGET', event, 'seq')), id)
end
