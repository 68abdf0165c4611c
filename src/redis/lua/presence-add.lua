-- ARGV: connection, user, username, ttl ms, key life ms. Adds (or extends) the connection's entry.
add(ARGV[1], ARGV[2], ARGV[3], now + tonumber(ARGV[4]))
finish(tonumber(ARGV[5]))
return changes
