-- Give fairness keys a turn unless they have one (restoring ready lists).
-- KEYS[j]  dtq:{q}:turns:{type}:{h|m|l}   ZSET of fairness keys, score = pass
-- ARGV[j]  the fairness key to add to KEYS[j]
-- A new key joins just below the lowest pass, as in enqueue.lua.
local AHEAD = 0.0005
local n = 0
for j = 1, #KEYS do
  if not redis.call('ZSCORE', KEYS[j], ARGV[j]) then
    local low = redis.call('ZRANGE', KEYS[j], 0, 0, 'WITHSCORES')
    redis.call('ZADD', KEYS[j], low[2] and tonumber(low[2]) - AHEAD or 0, ARGV[j])
    n = n + 1
  end
end
return n
