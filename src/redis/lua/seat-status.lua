-- KEYS[1]: the user's sorted set of connection ids scored by expiry; KEYS[2]: last seen (ms).
-- Returns {live connections, last seen or false}. Entries that expired (their node stopped
-- refreshing them: it died) are dropped; the user was last seen at that node's last refresh.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local seen = redis.call('GET', KEYS[2])
return {redis.call('ZCARD', KEYS[1]), seen and tonumber(seen) or false}
