-- KEYS[1]: a client send's idempotency record. Frees it only while it is still a claim (''): a
-- result written meanwhile (the publish ran after all, e.g. behind a timed-out reply) is kept.
if redis.call('GET', KEYS[1]) == '' then return redis.call('DEL', KEYS[1]) end
return 0
