-- Index tasks as ready and wake the streams that take them.
-- KEYS[1]      dtq:{q}:types   SET of task types seen in the queue
-- KEYS[2..k+1] dtq:{q}:ready:{type}:{h|m|l}   ZSETs of ready task ids
-- ARGV[1]      channel to publish the woken task types on (dtq:{q}:notify)
-- ARGV[2..k+1] task type of each ready key
-- ARGV[k+2..]  pairs: ready key number (1..k), task id (16 bytes)
-- Score = Redis time in microseconds (+ position in the call, for FIFO), so
-- one clock orders every server's submissions. NX keeps an already indexed
-- task where it is (re-indexing after a rebuild is harmless).
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local k = #KEYS - 1
local seen = {}
for j = 1, k do
  local ty = ARGV[1 + j]
  if not seen[ty] then
    seen[ty] = true
    redis.call('SADD', KEYS[1], ty)
  end
end
local n = 0
for a = k + 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1 + tonumber(ARGV[a])], 'NX', now_us + n, ARGV[a + 1])
  n = n + 1
end
for ty, _ in pairs(seen) do
  redis.call('PUBLISH', ARGV[1], ty)
end
return n
