-- lease_renew.lua: extend a run's lease, only while this worker still holds it (RunLease).
--
-- KEYS: [1] the run's lease.
-- ARGV: [1] this worker's token, [2] the lease's new TTL (ms).
-- Returns 1 when renewed, 0 when the lease is gone or another worker's.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
