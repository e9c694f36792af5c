-- Pop up to n ready tasks for the streams of one dispatcher round (the server
-- deals them out among workers that take the same work) and record their leases.
-- KEYS[1]   dtq:{q}:leases  ZSET member = task id (16 bytes) .. token (16 bytes),
--           score = lease deadline in ms (Redis clock)
-- KEYS[2]   dtq:{q}:paused  exists while the queue is paused
-- KEYS[3..3k+2]  ready ZSETs, three per task type in the order high, medium, low
--           (redis_keys.ready_keys; a key's place gives its priority step)
-- KEYS[3k+3..]   dispatch rate buckets (dtq:{q}:rate:{type}), one per rated type
-- ARGV[1]   n: most tasks to lease
-- ARGV[2]   provisional lease length in ms (the server sets each task's own
--           deadline once PostgreSQL confirms the lease)
-- ARGV[3]   head start per priority step, in microseconds (aging)
-- ARGV[4]   k: number of task types
-- ARGV[5]   m: number of rated types, then m triples: type number (1..k),
--           rate (leases per second), burst
-- ARGV[6+3m..] one token (16 bytes) per possible lease
-- Returns {now_ms, wait_ms, id1, key1, id2, key2, ...}: each id with the number
-- of the ready key (1-based, among the ready keys) it came from; wait_ms > 0
-- when a rated type still has ready tasks but no token: when the next comes.
-- The next task is the one with the smallest ready time minus its head start:
-- strict priority within the aging window, FIFO within a priority, and a low
-- priority task overtakes newer high ones once it has waited long enough. A
-- rated type out of tokens is skipped, so the other types keep flowing.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {now_ms, 0}
end
local n = tonumber(ARGV[1])
local deadline = now_ms + tonumber(ARGV[2])
local aging = tonumber(ARGV[3])
local k = tonumber(ARGV[4])
local m = tonumber(ARGV[5])
local first_token = 6 + 3 * m
local nkeys = 3 * k
-- Tokens of each rated type (by type number), refilled up to now.
local level, rate, burst, bucket = {}, {}, {}, {}
for r = 1, m do
  local ty = tonumber(ARGV[3 + 3 * r])
  rate[ty] = tonumber(ARGV[4 + 3 * r])
  burst[ty] = tonumber(ARGV[5 + 3 * r])
  bucket[ty] = KEYS[nkeys + 2 + r]
  local state = redis.call('HMGET', bucket[ty], 't', 'ts')
  local tokens = tonumber(state[1]) or burst[ty]
  local ts = tonumber(state[2]) or now_ms
  if now_ms > ts then
    tokens = math.min(burst[ty], tokens + (now_ms - ts) * rate[ty] / 1000)
  end
  level[ty] = tokens
end
local function type_of(i) return math.floor((i - 1) / 3) + 1 end
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
local function open(i)
  local ty = type_of(i)
  return level[ty] == nil or level[ty] >= 1
end
for i = 1, nkeys do head(i) end
local out = {now_ms, 0}
local taken = {}
for j = 1, n do
  local best = nil
  for i = 1, nkeys do
    if eff[i] and open(i) and (best == nil or eff[i] < eff[best]) then best = i end
  end
  if best == nil then break end
  local member = mem[best]
  redis.call('ZREM', KEYS[best + 2], member)
  redis.call('ZADD', KEYS[1], deadline, member .. ARGV[first_token - 1 + j])
  out[#out + 1] = member
  out[#out + 1] = best
  local ty = type_of(best)
  if level[ty] then
    level[ty] = level[ty] - 1
    taken[ty] = true
  end
  head(best)
end
local wait = 0
for ty, tokens in pairs(level) do
  if taken[ty] then
    redis.call('HSET', bucket[ty], 't', tostring(tokens), 'ts', now_ms)
    redis.call('PEXPIRE', bucket[ty], math.ceil((burst[ty] - tokens) * 1000 / rate[ty]) + 1000)
  end
  if tokens < 1 then
    local waiting = false
    for i = 3 * ty - 2, 3 * ty do
      if eff[i] then waiting = true end
    end
    if waiting then
      local ms = math.max(1, math.ceil((1 - tokens) * 1000 / rate[ty]))
      if wait == 0 or ms < wait then wait = ms end
    end
  end
end
out[2] = wait
return out
