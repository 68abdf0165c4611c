-- KEYS as append-history.lua. ARGV: read after this offset, at most this many events, ttl s, an
-- epoch for a new stream. Returns {epoch, offset, id, bytes, id, bytes, ...}, oldest first.
local epoch, offset = current(KEYS[1], KEYS[2], ARGV[4], ARGV[3])
local reply = {epoch, offset}
local after, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if limit > 0 and offset > after then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], (after + 1) .. '-0', '+', 'COUNT', limit)) do
    reply[#reply + 1] = entry[1]
    reply[#reply + 1] = entry[2][2]
  end
end
return reply
