-- KEYS[1]: a lease. ARGV: holder. Frees the lease only while the caller holds it (a node stopping
-- hands the work over at once instead of after the lease's life). Returns 1 when it was freed.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
