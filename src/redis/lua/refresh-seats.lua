-- KEYS[1]: the user's sorted set of connection ids; KEYS[2]: when the user was last seen (ms).
-- ARGV: ttl ms, how long last-seen is kept (ms), then this node's live connection ids of that user.
-- Re-adds (or extends) each of them, and the user was seen now; returns how many.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[2], now, 'PX', tonumber(ARGV[2]))
return #ARGV - 2
