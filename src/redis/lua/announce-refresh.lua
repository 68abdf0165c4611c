-- KEYS[1]: a room's announced members (a sorted set scored by expiry, Redis time in ms).
-- ARGV: ttl ms, then this node's announced members of that room.
-- Drops (and returns) at most 100 lapsed members, then re-adds (or extends) each of this node's.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
if #lapsed > 0 then redis.call('ZREM', KEYS[1], unpack(lapsed)) end
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl * 3)
return lapsed
