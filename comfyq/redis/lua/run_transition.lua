-- run_transition.lua: a status change and/or field update of a run that is not final
-- (RunStore.move). Prepended by run_move.lua.
--
-- KEYS: [1] run record, [2] its updates channel, [3] its lease, [4] ACTIVE_RUNS, [5] QUEUED_RUNS,
--   [6] RUN_METRICS.
-- ARGV: [1] new status ('' = keep), [2] its rank, [3] force ('1': a move back to an earlier
--   non-final status applies too), [4] lease token ('' = unfenced; else the write applies only
--   while that token holds the lease, and a final write releases it), [5] seconds to keep a
--   final record, [6] now, [7] run id, [8] how many statuses the run may have for the change to
--   apply (0 = any), then those statuses, then field/value pairs to set.
-- Returns the status the run had before, or false when nothing was applied.

local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
local allowed = tonumber(ARGV[8])
if allowed > 0 then
  local listed = false
  for index = 9, 8 + allowed do
    if ARGV[index] == status then listed = true end
  end
  if not listed then return false end
end
local rank = tonumber(redis.call('HGET', KEYS[1], 'rank'))
if rank >= FINAL_RANK then return false end
local fence = ARGV[4]
if fence ~= '' and redis.call('GET', KEYS[3]) ~= fence then return false end
local new_rank = tonumber(ARGV[2])
if move(rank, ARGV[1], new_rank, ARGV[3] == '1', ARGV[7], ARGV[6], ARGV[5], 9 + allowed) then
  -- A worker's final write gives its lease back in the same step.
  if fence ~= '' and new_rank >= FINAL_RANK then redis.call('DEL', KEYS[3]) end
  return status
end
return false
