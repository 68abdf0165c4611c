-- KEYS[1]: a lease. ARGV: holder, life (ms). Takes the lease when it is free, or extends it when the
-- holder has it. Returns 1 when the caller holds it now.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
