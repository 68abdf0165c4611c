-- KEYS[1]: the user's sorted set of connection ids scored by expiry (Redis time, ms); KEYS[2]: when
-- the user was last seen (ms). ARGV: connection id, the per-user limit, ttl ms, how long last-seen is
-- kept (ms). Returns 1 when the seat is taken (the user was seen now), 0 at the limit.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[2], now, 'PX', tonumber(ARGV[4]))
return 1
