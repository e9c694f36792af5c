-- Re-create leases of RUNNING tasks (after Redis lost them) and count them in.
-- KEYS[1..3]  dtq:{q}:leases, dtq:{q}:holders, dtq:{q}:running (lease.lua)
-- ARGV     triples: lease member (id .. token), deadline (ms), fairness key
-- A lease already held is left as it is (NX), so the counts stay exact when
-- this runs while leases are being granted. Returns the number re-created.
local n = 0
for a = 1, #ARGV, 3 do
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[a + 1], ARGV[a]) == 1 then
    n = n + 1
    redis.call('HSET', KEYS[2], ARGV[a], ARGV[a + 2])
    redis.call('HINCRBY', KEYS[3], 'all', 1)
    redis.call('HINCRBY', KEYS[3], '#' .. ARGV[a + 2], 1)
  end
end
return n
