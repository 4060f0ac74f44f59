-- lease_release.lua: give a run's lease back, only while this worker still holds it (RunLease).
--
-- KEYS: [1] the run's lease.
-- ARGV: [1] this worker's token.
-- Returns 1 when released, 0 when the lease is gone or another worker's.

if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
