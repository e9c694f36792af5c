-- Take tokens from a token bucket for several requests in turn, each all or
-- nothing (a submit batch takes as many tokens as it has tasks, or none).
-- KEYS[1]  the bucket: HASH t = tokens (may be below 0), ts = last update (ms)
-- ARGV[1]  rate: tokens added per second
-- ARGV[2]  burst: most tokens the bucket holds
-- ARGV[3..] n of each request, in the order they are served
-- Returns one number per request: 0 when its tokens were taken, else the ms
-- until enough tokens are in.
-- A request larger than the burst is let through when the bucket is full and
-- leaves it in debt (below 0), so the long-run rate still holds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
end
local out, taken = {}, false
for a = 3, #ARGV do
  local n = tonumber(ARGV[a])
  local need = math.min(n, burst)
  if tokens >= need then
    tokens = tokens - n
    taken = true
    out[#out + 1] = 0
  else
    out[#out + 1] = math.ceil((need - tokens) * 1000 / rate)
  end
end
if taken then
  redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
  -- Gone once full again: a missing bucket is a full one.
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
end
return out
