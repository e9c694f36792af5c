-- Pop up to n ready tasks for the streams of one dispatcher round (the server
-- deals them out among workers that take the same work) and record their leases.
-- KEYS[1]   dtq:{q}:leases  ZSET member = task id (16 bytes) .. token (16 bytes),
--           score = lease deadline in ms (Redis clock)
-- KEYS[2]   dtq:{q}:paused  exists while the queue is paused
-- KEYS[3..] ready ZSETs, three per task type in the order high, medium, low
--           (redis_keys.ready_keys; a key's place gives its priority step)
-- ARGV[1]   n: most tasks to lease
-- ARGV[2]   provisional lease length in ms (the server sets each task's own
--           deadline once PostgreSQL confirms the lease)
-- ARGV[3]   head start per priority step, in microseconds (aging)
-- ARGV[4..] one token (16 bytes) per possible lease
-- Returns {now_ms, id1, key1, id2, key2, ...}: each id with the number of the
-- ready key (1-based, among KEYS[3..]) it came from.
-- The next task is the one with the smallest ready time minus its head start:
-- strict priority within the aging window, FIFO within a priority, and a low
-- priority task overtakes newer high ones once it has waited long enough.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now_ms}
if redis.call('EXISTS', KEYS[2]) == 1 then
  return out
end
local n = tonumber(ARGV[1])
local deadline = now_ms + tonumber(ARGV[2])
local aging = tonumber(ARGV[3])
local nkeys = #KEYS - 2
local eff, mem = {}, {}
local function head(i)
  local r = redis.call('ZRANGE', KEYS[i + 2], 0, 0, 'WITHSCORES')
  if r[1] then
    eff[i] = tonumber(r[2]) + ((i - 1) % 3) * aging
    mem[i] = r[1]
  else
    eff[i] = nil
    mem[i] = nil
  end
end
for i = 1, nkeys do head(i) end
for j = 1, n do
  local best = nil
  for i = 1, nkeys do
    if eff[i] and (best == nil or eff[i] < eff[best]) then best = i end
  end
  if best == nil then break end
  local member = mem[best]
  redis.call('ZREM', KEYS[best + 2], member)
  redis.call('ZADD', KEYS[1], deadline, member .. ARGV[3 + j])
  out[#out + 1] = member
  out[#out + 1] = best
  head(best)
end
return out
