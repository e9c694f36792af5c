-- Pop up to n ready tasks for the streams of one dispatcher round (the server
-- deals them out among workers that take the same work) and record their leases.
-- KEYS[1]   dtq:{q}:leases  ZSET member = task id (16 bytes) .. token (16 bytes),
--           score = lease deadline in ms (Redis clock)
-- KEYS[2]   dtq:{q}:paused  exists while the queue is paused
-- KEYS[3]   dtq:{q}:holders HASH lease member -> its task's fairness key
-- KEYS[4]   dtq:{q}:running HASH 'all' -> leases held, '#' .. key -> leases of
--           that fairness key (end_leases.lua and claim_expired.lua count down)
-- KEYS[5]   dtq:{q}:capped  SET of fairness keys ('#' .. key; 'all': the queue)
--           passed over at their cap: end_leases.lua wakes the queue's streams
--           when one of their leases ends
-- KEYS[6..6k+5]  pairs per step (type and priority), three steps per task type
--           in the order high, medium, low (redis_keys.steps; a step's place
--           gives its priority): the step's shared ready ZSET, then its turns
--           (ZSET of the fairness keys with ready tasks, score = pass)
-- KEYS[6k+6..]   dispatch rate buckets (dtq:{q}:rate:{type}), one per rated type
-- A fairness key's ready ZSET is the shared one's name .. '#' .. key ('' = the
-- shared one): built here, in the queue's hash tag, so one slot still.
-- ARGV[1]   n: most tasks to lease
-- ARGV[2]   provisional lease length in ms (the server sets each task's own
--           deadline once PostgreSQL confirms the lease)
-- ARGV[3]   head start per priority step, in microseconds (aging)
-- ARGV[4]   k: number of task types
-- ARGV[5]   most leases held in the queue at once (0: no cap)
-- ARGV[6]   most leases held per fairness key at once (0: no cap)
-- ARGV[7]   w: number of weighted fairness keys, then w pairs: key, weight
-- ARGV[8+2w] m: number of rated types, then m triples: type number (1..k),
--           rate (leases per second), burst
-- ARGV[9+2w+3m..] one token (16 bytes) per possible lease
-- Returns {now_ms, wait_ms, id1, step1, id2, step2, ...}: each id with the
-- number of the step (1-based) it came from; wait_ms > 0
-- when a rated type still has ready tasks but no token: when the next comes.
-- The next task is the one with the smallest ready time minus its head start:
-- strict priority within the aging window, FIFO within a priority, and a low
-- priority task overtakes newer high ones once it has waited long enough. A
-- rated type out of tokens is skipped, so the other types keep flowing.
-- Fair dispatch: within a step, the task comes from the fairness key with the
-- lowest pass (ties: the smallest key), whose pass then grows by 1 / its
-- weight (stride scheduling: a key of weight 3 gets three turns to another's
-- one while both have ready tasks); a key whose list empties leaves the turns,
-- and one that gets ready tasks again joins at the lowest pass (enqueue.lua).
-- A key at its cap keeps its turn and pass but is passed over until one of its
-- leases ends; a queue at its cap leases nothing.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {now_ms, 0}
end
local n = tonumber(ARGV[1])
local deadline = now_ms + tonumber(ARGV[2])
local aging = tonumber(ARGV[3])
local k = tonumber(ARGV[4])
local cap, key_cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local w = tonumber(ARGV[7])
local weight = {}
for a = 8, 7 + 2 * w, 2 do weight[ARGV[a]] = tonumber(ARGV[a + 1]) end
local at = 8 + 2 * w
local m = tonumber(ARGV[at])
local first_token = at + 1 + 3 * m
local nkeys = 3 * k
local step_keys = 2 * nkeys
local HOLDERS, RUNNING, CAPPED = KEYS[3], KEYS[4], KEYS[5]
-- Tokens of each rated type (by type number), refilled up to now.
local level, rate, burst, bucket = {}, {}, {}, {}
for r = 1, m do
  local ty = tonumber(ARGV[at - 2 + 3 * r])
  rate[ty] = tonumber(ARGV[at - 1 + 3 * r])
  burst[ty] = tonumber(ARGV[at + 3 * r])
  bucket[ty] = KEYS[step_keys + 5 + r]
  local state = redis.call('HMGET', bucket[ty], 't', 'ts')
  local tokens = tonumber(state[1]) or burst[ty]
  local ts = tonumber(state[2]) or now_ms
  if now_ms > ts then
    tokens = math.min(burst[ty], tokens + (now_ms - ts) * rate[ty] / 1000)
  end
  level[ty] = tokens
end
local function type_of(i) return math.floor((i - 1) / 3) + 1 end
-- Leases held, of the queue and of each fairness key met (read once).
local held = tonumber(redis.call('HGET', RUNNING, 'all')) or 0
local held_by = {}
local function held_of(key)
  local h = held_by[key]
  if h == nil then
    h = tonumber(redis.call('HGET', RUNNING, '#' .. key)) or 0
    held_by[key] = h
  end
  return h
end
local function full(key) return key_cap > 0 and held_of(key) >= key_cap end
local capped = {}  -- '#' .. key (or 'all') -> true: passed over at its cap
local eff, mem, list, fkey, pass = {}, {}, {}, {}, {}
-- The next task of step i: the head of the ready list of the first turn whose
-- key is under its cap.
local function head(i)
  local shared, turns = KEYS[2 * i + 4], KEYS[2 * i + 5]
  eff[i] = nil
  mem[i] = nil
  local skip = 0
  while true do
    local r = redis.call('ZRANGE', turns, skip, skip, 'WITHSCORES')
    if not r[1] then
      -- Tasks indexed before fair dispatch are in the shared list, no turn.
      if skip > 0 or redis.call('EXISTS', shared) == 0 then return end
      r = {'', '0'}
      redis.call('ZADD', turns, 0, '')
    end
    local name = shared
    if r[1] ~= '' then name = shared .. '#' .. r[1] end
    if redis.call('EXISTS', name) == 0 then
      redis.call('ZREM', turns, r[1])
    elseif full(r[1]) then
      capped['#' .. r[1]] = true
      skip = skip + 1
    else
      local h = redis.call('ZRANGE', name, 0, 0, 'WITHSCORES')
      eff[i] = tonumber(h[2]) + ((i - 1) % 3) * aging
      mem[i] = h[1]
      list[i], fkey[i], pass[i] = name, r[1], tonumber(r[2])
      return
    end
  end
end
local function open(i)
  local ty = type_of(i)
  return level[ty] == nil or level[ty] >= 1
end
for i = 1, nkeys do head(i) end
local out = {now_ms, 0}
local taken = {}
local holders, counts = {}, {}
for j = 1, n do
  local best = nil
  for i = 1, nkeys do
    if eff[i] and open(i) and (best == nil or eff[i] < eff[best]) then best = i end
  end
  if best == nil then break end
  if cap > 0 and held >= cap then
    capped['all'] = true
    break
  end
  local member, key = mem[best], fkey[best]
  redis.call('ZREM', list[best], member)
  if redis.call('EXISTS', list[best]) == 1 then
    redis.call('ZADD', KEYS[2 * best + 5], pass[best] + 1 / (weight[key] or 1), key)
  else
    redis.call('ZREM', KEYS[2 * best + 5], key)
  end
  local lease = member .. ARGV[first_token - 1 + j]
  redis.call('ZADD', KEYS[1], deadline, lease)
  holders[#holders + 1] = lease
  holders[#holders + 1] = key
  counts[key] = (counts[key] or 0) + 1
  held = held + 1
  held_by[key] = held_of(key) + 1
  out[#out + 1] = member
  out[#out + 1] = best
  local ty = type_of(best)
  if level[ty] then
    level[ty] = level[ty] - 1
    taken[ty] = true
  end
  head(best)
  -- Other steps whose turn is this key's may be at its cap now.
  if full(key) then
    for i = 1, nkeys do
      if i ~= best and fkey[i] == key and eff[i] then head(i) end
    end
  end
end
if #holders > 0 then
  redis.call('HSET', HOLDERS, unpack(holders))
  redis.call('HINCRBY', RUNNING, 'all', #holders / 2)
  for key, c in pairs(counts) do redis.call('HINCRBY', RUNNING, '#' .. key, c) end
end
for key, _ in pairs(capped) do redis.call('SADD', CAPPED, key) end
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
