-- run_claim.lua: a worker's claim of a run, in one round trip (RunStore.claim): read the fields
-- it needs and, unless the run is final, cancelled or leased by another worker, take its lease,
-- count the attempt and move it to 'started'. Prepended by run_move.lua.
--
-- KEYS: [1] run record, [2] its updates channel, [3] its lease, [4] ACTIVE_RUNS, [5] QUEUED_RUNS,
--   [6] RUN_METRICS, [7] its cancel flag.
-- ARGV: [1] lease token, [2] lease TTL (ms), [3] seconds to keep a final record, [4] now,
--   [5] run id, [6] how many field names follow, then the names, then field/value pairs to set.
-- Returns {outcome, status, attempts, values of the names...}; outcome is one of 'missing',
-- 'final', 'cancel', 'leased' (those stop after the status), 'claimed'.

local count = tonumber(ARGV[6])
local values = redis.call('HMGET', KEYS[1], 'status', 'rank', 'attempts',
  unpack(ARGV, 7, 6 + count))
local status, rank = values[1], tonumber(values[2])
if not status then return {'missing'} end
if rank >= FINAL_RANK then return {'final', status} end
if redis.call('EXISTS', KEYS[7]) == 1 then return {'cancel', status} end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'leased', status} end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
move(rank, STARTED, STARTED_RANK, false, ARGV[5], ARGV[4], ARGV[3], 7 + count)
values[3] = attempts
return {'claimed', unpack(values)}
