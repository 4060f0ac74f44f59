-- beat_lock_hold.lua: renew the maintenance beat's lock if this beat holds it, else take it if it
-- is free (scheduler.beat.BeatLock).
--
-- KEYS: [1] BEAT_LOCK.
-- ARGV: [1] this beat's token, [2] the lock's TTL (ms).
-- Returns 1 while this beat holds the lock, 0 when another beat does.

local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
