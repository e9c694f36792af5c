-- Index tasks as ready and wake the streams that take them.
-- KEYS[1]        dtq:{q}:types   SET of task types seen in the queue
-- KEYS[2j], KEYS[2j+1] (j = 1..k)  a ready list (dtq:{q}:ready:{type}:{h|m|l},
--                then #{fairness key} unless the key is ''; ZSET of task ids)
--                and the turns of its type and priority (ZSET of fairness keys)
-- ARGV[1]        channel to publish the woken task types on (dtq:{q}:notify)
-- ARGV[2j], ARGV[2j+1]  task type and fairness key of ready list j
-- ARGV[2k+2..]   pairs: ready list number (1..k), task id (16 bytes)
-- Score = Redis time in microseconds (+ position in the call, for FIFO), so
-- one clock orders every server's submissions. NX keeps an already indexed
-- task where it is (re-indexing after a rebuild is harmless). A fairness key
-- that had no turn joins the turns just below the lowest pass there, so it goes
-- next (at the lowest pass, a tie with a backlogged key of a smaller name would
-- make it wait one more turn); AHEAD is half the smallest stride (1 / 1000, the
-- highest weight), so its next pass is behind the key it jumped.
local AHEAD = 0.0005
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local k = (#KEYS - 1) / 2
local seen = {}
for j = 1, k do
  local ty = ARGV[2 * j]
  if not seen[ty] then
    seen[ty] = true
    redis.call('SADD', KEYS[1], ty)
  end
  local turns, key = KEYS[2 * j + 1], ARGV[2 * j + 1]
  if not redis.call('ZSCORE', turns, key) then
    local low = redis.call('ZRANGE', turns, 0, 0, 'WITHSCORES')
    redis.call('ZADD', turns, low[2] and tonumber(low[2]) - AHEAD or 0, key)
  end
end
local n = 0
for a = 2 * k + 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[2 * tonumber(ARGV[a])], 'NX', now_us + n, ARGV[a + 1])
  n = n + 1
end
for ty, _ in pairs(seen) do
  redis.call('PUBLISH', ARGV[1], ty)
end
return n
