-- ARGV[5]: the most due entries to decide. Returns the event types produced, then how many entries
-- were decided last (the caller sweeps again at once when it took the most).
local entries = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, entry in ipairs(entries) do settle(entry) end
emitted[#emitted + 1] = #entries
return emitted
