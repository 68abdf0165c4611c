-- Keeps one revocation (revocation.ts) in the sorted set KEYS[1], scored by its expiry (epoch ms).
-- ARGV: member, expiry, now, the most entries kept. Expired entries go first; a new member past
-- the cap is refused (0); the key itself expires with its last entry, so nothing outlives the TTLs.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
if not current or tonumber(current) < tonumber(ARGV[2]) then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
