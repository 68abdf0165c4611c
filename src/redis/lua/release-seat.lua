-- KEYS[1]: the user's sorted set of connection ids; KEYS[2]: when the user was last seen (ms).
-- ARGV: the connection id, how long last-seen is kept (ms). Frees the seat; the user was seen now.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], now, 'PX', tonumber(ARGV[2]))
return now
