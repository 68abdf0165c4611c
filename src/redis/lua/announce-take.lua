-- KEYS[1]: a room's announced members (a sorted set scored by expiry, Redis time in ms).
-- ARGV: the member, ttl ms, the cap.
-- Drops (and returns) at most 100 lapsed members, then adds the member if fewer than the cap are
-- left (a member already there is refreshed). Returns {1 if added, lapsed...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
if #lapsed > 0 then redis.call('ZREM', KEYS[1], unpack(lapsed)) end
local taken = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl * 3)
  taken = 1
end
return {taken, unpack(lapsed)}
