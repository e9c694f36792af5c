-- Take leases whose deadline passed, so that exactly one reaper handles each.
-- KEYS[1]  dtq:{q}:leases
-- ARGV[1]  most leases to take
-- Returns the lease members (id .. token). A heartbeat that arrives after this
-- finds its lease gone and the worker is told to stop.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
return due
