-- KEYS[1]: the user's sorted set of connection ids scored by expiry; KEYS[2]: last seen (ms).
-- ARGV: the seat ttl ms, how long last-seen is kept (ms). Returns {live connections, last seen or
-- false}. Entries that expired (their node stopped refreshing them: it died) are dropped, and the
-- user was last seen at their last refresh (expiry - ttl).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES')
local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
if #expired > 0 then
  local latest = tonumber(expired[#expired]) - ttl
  if latest > seen then
    seen = latest
    redis.call('SET', KEYS[2], seen, 'PX', tonumber(ARGV[2]))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
local count = redis.call('ZCARD', KEYS[1])
if seen == 0 then return {count, false} end
return {count, seen}
