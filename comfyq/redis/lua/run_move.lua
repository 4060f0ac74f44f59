-- run_move.lua: shared by run_transition.lua and run_claim.lua (prepended to each).
--
-- move() applies a status change, and the field/value pairs in ARGV from `first_field` on, to a
-- run whose current rank is `rank`; it keeps the active/queued indexes in step with the status
-- and announces the change. Only forward moves apply, unless `force` (re-queueing).
-- KEYS of both scripts: [1] run record, [2] its updates channel, [3] its lease, [4] ACTIVE_RUNS,
-- [5] QUEUED_RUNS.

-- Equal to comfyq.run_status's FINAL_RANK and STATUS_RANK (tests/redis/test_lua_scripts.py).
local FINAL_RANK = 9
local QUEUED_RANK = 1
local STARTED_RANK = 2
local STARTED = 'started'

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
  redis.call('PUBLISH', KEYS[2], new_status)
  return true
end
