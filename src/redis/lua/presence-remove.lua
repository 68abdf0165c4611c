-- ARGV: connection, grace ms, reason, key life ms. Grace 0: the entry goes now; else it lives that
-- much longer without refresh (an abnormal close: a reconnect within it shows no leave).
local conn, grace, reason, life = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if grace > 0 then
  redis.call('ZADD', KEYS[1], 'XX', now + grace, conn)
else
  drop(conn, reason)
end
finish(life)
return changes
