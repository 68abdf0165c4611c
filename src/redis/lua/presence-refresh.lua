-- ARGV: ttl ms, key life ms, then connection, user, username of each of the node's members of the
-- room: their entries live ttl more, and one the store lost (Redis restarted empty) is added again.
local expires, life = now + tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV, 3 do add(ARGV[i], ARGV[i + 1], ARGV[i + 2], expires) end
finish(life)
return changes
