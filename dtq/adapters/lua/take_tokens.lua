-- Take n tokens from a token bucket, all or nothing (a submit batch).
-- KEYS[1]  the bucket: HASH t = tokens (may be below 0), ts = last update (ms)
-- ARGV[1]  n: tokens wanted
-- ARGV[2]  rate: tokens added per second
-- ARGV[3]  burst: most tokens the bucket holds
-- Returns {1, 0} when taken, else {0, ms until enough tokens are in}.
-- A batch larger than the burst is let through when the bucket is full and
-- leaves it in debt (below 0), so the long-run rate still holds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
end
local need = math.min(n, burst)
if tokens < need then
  return {0, math.ceil((need - tokens) * 1000 / rate)}
end
tokens = tokens - n
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
-- Gone once full again: a missing bucket is a full one.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {1, 0}
