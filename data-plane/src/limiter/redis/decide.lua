-- One rate-limit decision for GLOBAL policies: a token bucket in one Redis key, refilled from
-- Redis's own clock, taking up to `want` tokens at once (a lease). Atomic, so two data planes
-- can never both read a level and both take the same token (Kong #5311).
--
-- KEYS[1]  the bucket: "<level> <last refill, microseconds>" (a string, expiring when full)
-- ARGV[1]  units added per microsecond (the policy's limit)
-- ARGV[2]  units per token (the period in microseconds)
-- ARGV[3]  capacity in units (burst * ARGV[2])
-- ARGV[4]  tokens wanted, at least 1
-- ARGV[5]  optional: the time in microseconds, for tests only; otherwise Redis's TIME
--
-- The units are the data plane's local bucket's (see limiter/bucket.rs): one microsecond adds
-- exactly `limit` units and one token is `period_us` units, so after exactly one period an
-- empty bucket holds exactly `limit` tokens. Lua numbers are doubles: exact below 2^53
-- units (burst * period in seconds below 9e9, e.g. a burst of 100,000 per day).
--
-- Returns {granted, whole tokens left, us until 1 token, us until `want` tokens, us until full}.
local per_us = tonumber(ARGV[1])
local token = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local now
if ARGV[5] then
  now = tonumber(ARGV[5])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local level = cap
local last = now
local held = redis.call('GET', KEYS[1])
if held then
  local l, ts = string.match(held, '^(%d+) (%d+)$')
  if not l then
    return redis.error_reply('GWBADVALUE key ' .. KEYS[1] .. ' holds a value gw did not write')
  end
  level = tonumber(l)
  last = tonumber(ts)
end
-- A clock that went back (a failover to a replica) adds nothing and does not move `last`.
if now > last then
  level = level + (now - last) * per_us
  last = now
end
if level > cap then
  level = cap
end

local granted = math.floor(level / token)
if granted > want then
  granted = want
end
if granted > 0 then
  level = level - granted * token
  -- Gone once it would be full again: a full bucket carries no information.
  local ttl_ms = math.ceil((cap - level) / per_us / 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.0f %.0f', level, last), 'PX', ttl_ms)
end

local function until_units(units)
  if level >= units then
    return 0
  end
  return math.ceil((units - level) / per_us)
end
return {granted, math.floor(level / token), until_units(token), until_units(want * token),
  until_units(cap)}
