-- Pop up to n ready tasks for the streams of one dispatcher round (the server
-- deals them out among workers that take the same work) and record their leases.
-- KEYS[1]   dtq:{q}:leases  ZSET member = task id (16 bytes) .. token (16 bytes),
--           score = lease deadline in ms (Redis clock)
-- KEYS[2]   dtq:{q}:paused  exists while the queue is paused
-- KEYS[3..6k+2]  pairs per step (type and priority), three steps per task type
--           in the order high, medium, low (redis_keys.steps; a step's place
--           gives its priority): the step's shared ready ZSET, then its turns
--           (ZSET of the fairness keys with ready tasks, score = pass)
-- KEYS[6k+3..]   dispatch rate buckets (dtq:{q}:rate:{type}), one per rated type
-- A fairness key's ready ZSET is the shared one's name .. '#' .. key ('' = the
-- shared one): built here, in the queue's hash tag, so one slot still.
-- ARGV[1]   n: most tasks to lease
-- ARGV[2]   provisional lease length in ms (the server sets each task's own
--           deadline once PostgreSQL confirms the lease)
-- ARGV[3]   head start per priority step, in microseconds (aging)
-- ARGV[4]   k: number of task types
-- ARGV[5]   m: number of rated types, then m triples: type number (1..k),
--           rate (leases per second), burst
-- ARGV[6+3m..] one token (16 bytes) per possible lease
-- Returns {now_ms, wait_ms, id1, step1, id2, step2, ...}: each id with the
-- number of the step (1-based) it came from; wait_ms > 0
-- when a rated type still has ready tasks but no token: when the next comes.
-- The next task is the one with the smallest ready time minus its head start:
-- strict priority within the aging window, FIFO within a priority, and a low
-- priority task overtakes newer high ones once it has waited long enough. A
-- rated type out of tokens is skipped, so the other types keep flowing.
-- Fair dispatch: within a step, the task comes from the fairness key with the
-- lowest pass (ties: the smallest key), whose pass then grows by one; a key
-- whose list empties leaves the turns, and one that gets ready tasks again
-- joins at the lowest pass (enqueue.lua). So keys take turns round-robin, and
-- one key's backlog delays another's task by one turn per active key at most.
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
local step_keys = 2 * nkeys
-- Tokens of each rated type (by type number), refilled up to now.
local level, rate, burst, bucket = {}, {}, {}, {}
for r = 1, m do
  local ty = tonumber(ARGV[3 + 3 * r])
  rate[ty] = tonumber(ARGV[4 + 3 * r])
  burst[ty] = tonumber(ARGV[5 + 3 * r])
  bucket[ty] = KEYS[step_keys + 2 + r]
  local state = redis.call('HMGET', bucket[ty], 't', 'ts')
  local tokens = tonumber(state[1]) or burst[ty]
  local ts = tonumber(state[2]) or now_ms
  if now_ms > ts then
    tokens = math.min(burst[ty], tokens + (now_ms - ts) * rate[ty] / 1000)
  end
  level[ty] = tokens
end
local function type_of(i) return math.floor((i - 1) / 3) + 1 end
local eff, mem, list, fkey, pass = {}, {}, {}, {}, {}
-- The next task of step i: the head of the ready list of its turn.
local function head(i)
  local shared, turns = KEYS[2 * i + 1], KEYS[2 * i + 2]
  eff[i] = nil
  mem[i] = nil
  while true do
    local r = redis.call('ZRANGE', turns, 0, 0, 'WITHSCORES')
    if not r[1] then
      -- Tasks indexed before fair dispatch are in the shared list, no turn.
      if redis.call('EXISTS', shared) == 0 then return end
      r = {'', '0'}
      redis.call('ZADD', turns, 0, '')
    end
    local name = shared
    if r[1] ~= '' then name = shared .. '#' .. r[1] end
    local h = redis.call('ZRANGE', name, 0, 0, 'WITHSCORES')
    if h[1] then
      eff[i] = tonumber(h[2]) + ((i - 1) % 3) * aging
      mem[i] = h[1]
      list[i], fkey[i], pass[i] = name, r[1], tonumber(r[2])
      return
    end
    redis.call('ZREM', turns, r[1])
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
  redis.call('ZREM', list[best], member)
  if redis.call('EXISTS', list[best]) == 1 then
    redis.call('ZADD', KEYS[2 * best + 2], pass[best] + 1, fkey[best])
  else
    redis.call('ZREM', KEYS[2 * best + 2], fkey[best])
  end
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
