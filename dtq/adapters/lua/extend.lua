-- Extend held leases (heartbeats, ExtendLease).
-- KEYS[1]  dtq:{q}:leases
-- ARGV     pairs: lease member (id .. token), lease length in ms
-- Returns one new deadline (ms, Redis clock) per pair, 0 where the lease is not
-- held any more (expired and reclaimed, completed, or cancelled).
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for a = 1, #ARGV, 2 do
  local deadline = now_ms + tonumber(ARGV[a + 1])
  if redis.call('ZSCORE', KEYS[1], ARGV[a]) then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[a])
    out[#out + 1] = deadline
  else
    out[#out + 1] = 0
  end
end
return out
