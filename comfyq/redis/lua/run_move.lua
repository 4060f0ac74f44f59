-- run_move.lua: shared by run_transition.lua and run_claim.lua (prepended to each).
--
-- move() applies a status change, and the field/value pairs in ARGV from `first_field` on, to a
-- run whose current rank is `rank`; it keeps the active/queued indexes and the run counts of
-- comfyq.metrics in step with the status and announces the change. Only forward moves apply,
-- unless `force` (re-queueing).
-- KEYS of both scripts: [1] run record, [2] its updates channel, [3] its lease, [4] ACTIVE_RUNS,
-- [5] QUEUED_RUNS, [6] RUN_METRICS.

-- Equal to comfyq.run_status's FINAL_RANK and STATUS_RANK (tests/redis/test_lua_scripts.py).
local FINAL_RANK = 9
local QUEUED_RANK = 1
local STARTED_RANK = 2
local STARTED = 'started'

-- An observation is counted at its value rounded up to two significant digits ('25e-1' for
-- 2.43 s), so any histogram bucket bound of two significant digits reads it exactly, whatever
-- bounds the exporter was given, and the hash holds a bounded number of fields.
local function two_digits_up(seconds)
  if seconds < 0.001 then return '10e-4' end
  local exponent = math.floor(math.log10(seconds)) - 1
  local mantissa = math.ceil(seconds / 10 ^ exponent - 1e-9)
  if mantissa >= 100 then mantissa, exponent = 10, exponent + 1 end
  return mantissa .. 'e' .. exponent
end

local function observe(name, labels, seconds)
  seconds = math.max(0, seconds)
  redis.call('HINCRBY', KEYS[6], name .. '|' .. labels .. '|' .. two_digits_up(seconds), 1)
  redis.call('HINCRBYFLOAT', KEYS[6], name .. '_sum|' .. labels, seconds)
end

local function gpu_label(raw)
  local ok, gpu = pcall(cjson.decode, raw or '')
  if ok and type(gpu) == 'string' then return gpu end
  return 'unknown'
end

-- A run is counted started once (a re-queued run starts again with attempts > 1), with its
-- queue wait; and finished once, by status, with its duration when it had started.
local function tally(rank, new_status, new_rank, moment)
  if new_rank >= FINAL_RANK then
    local f = redis.call('HMGET', KEYS[1], 'gpu', 'started_at', 'ended_at')
    local gpu = gpu_label(f[1])
    redis.call('HINCRBY', KEYS[6], 'finished|' .. gpu .. '|' .. new_status, 1)
    local started = tonumber(f[2])
    if started then
      observe('duration', gpu .. '|' .. new_status, (tonumber(f[3]) or moment) - started)
    end
  elseif new_rank >= STARTED_RANK and rank < STARTED_RANK then
    local f = redis.call('HMGET', KEYS[1], 'gpu', 'attempts', 'queued_at', 'started_at')
    if (tonumber(f[2]) or 0) > 1 then return end
    local gpu = gpu_label(f[1])
    redis.call('HINCRBY', KEYS[6], 'started|' .. gpu, 1)
    local queued = tonumber(f[3])
    if queued then observe('queue_wait', gpu, (tonumber(f[4]) or moment) - queued) end
  end
end

local function move(rank, new_status, new_rank, force, run_id, moment, retention, first_field)
  if new_status ~= '' then
    if new_rank <= rank and not force then return false end
    redis.call('HSET', KEYS[1], 'status', new_status, 'rank', new_rank)
    if new_rank >= FINAL_RANK then
      redis.call('ZREM', KEYS[4], run_id)
      redis.call('ZREM', KEYS[5], run_id)
      redis.call('EXPIRE', KEYS[1], retention)
    elseif new_rank == QUEUED_RANK then
      redis.call('ZREM', KEYS[4], run_id)
      redis.call('ZADD', KEYS[5], moment, run_id)
    elseif new_rank >= STARTED_RANK then
      redis.call('ZREM', KEYS[5], run_id)
      redis.call('ZADD', KEYS[4], moment, run_id)
    end
  end
  if #ARGV >= first_field then redis.call('HSET', KEYS[1], unpack(ARGV, first_field)) end
  if new_status ~= '' then tally(rank, new_status, new_rank, tonumber(moment)) end
  redis.call('PUBLISH', KEYS[2], new_status)
  return true
end
