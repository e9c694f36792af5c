-- Take leases whose deadline passed, so that exactly one reaper handles each.
-- KEYS[1]  dtq:{q}:leases
-- KEYS[2..4]  dtq:{q}:holders, dtq:{q}:running, dtq:{q}:capped (end_leases.lua)
-- ARGV[1]  most leases to take
-- ARGV[2]  dtq:{q}:notify
-- Returns the lease members (id .. token). A heartbeat that arrives after this
-- finds its lease gone and the worker is told to stop.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
if #due == 0 then return due end
local woke = false
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local key = redis.call('HGET', KEYS[2], member)
  if key then
    redis.call('HDEL', KEYS[2], member)
    redis.call('HINCRBY', KEYS[3], 'all', -1)
    if redis.call('HINCRBY', KEYS[3], '#' .. key, -1) <= 0 then
      redis.call('HDEL', KEYS[3], '#' .. key)
    end
    if redis.call('SREM', KEYS[4], '#' .. key, 'all') > 0 then woke = true end
  end
end
if woke then redis.call('PUBLISH', ARGV[2], '*') end
return due
