-- KEYS[1]: a client send's idempotency record, in the room channel's slot. ARGV: the send's result,
-- how long it is kept (ms), 1 when this send holds the record's claim, the channel, the frame, and
-- PUBLISH or SPUBLISH. Publishes and records in one step, unless the record holds a result already
-- (returned: a repeat) or another send's claim (returned as ''). Returns nil once published.
local found = redis.call('GET', KEYS[1])
if found and (found ~= '' or ARGV[3] ~= '1') then return found end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
redis.call(ARGV[6], ARGV[4], ARGV[5])
return nil
