-- End held leases (outcomes recorded, grants not recorded, cancels, releases)
-- and count them out of the running counts the caps are checked against.
-- KEYS[1]  dtq:{q}:leases   ZSET of lease members (id .. token)
-- KEYS[2]  dtq:{q}:holders  HASH lease member -> fairness key
-- KEYS[3]  dtq:{q}:running  HASH 'all' / '#' .. key -> leases held
-- KEYS[4]  dtq:{q}:capped   SET of '#' .. key / 'all' passed over at their cap
-- ARGV[1]  dtq:{q}:notify: told '*' when a capped key (or queue) got room
-- ARGV[2..] lease members
-- Only a lease still held counts down (a stale or repeated end is a no-op), and
-- only one with a holder: leases from before running counts were kept have none.
-- Returns the number of leases ended.
local n, woke = 0, false
for a = 2, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[a]) == 1 then
    n = n + 1
    local key = redis.call('HGET', KEYS[2], ARGV[a])
    if key then
      redis.call('HDEL', KEYS[2], ARGV[a])
      redis.call('HINCRBY', KEYS[3], 'all', -1)
      if redis.call('HINCRBY', KEYS[3], '#' .. key, -1) <= 0 then
        redis.call('HDEL', KEYS[3], '#' .. key)
      end
      if redis.call('SREM', KEYS[4], '#' .. key, 'all') > 0 then woke = true end
    end
  end
end
if woke then redis.call('PUBLISH', ARGV[1], '*') end
return n
