-- KEYS as append-history.lua (the first two). ARGV: the offset to read from, at most this many
-- events, ttl s, an epoch for a new stream, and `after` (events above the offset, oldest first) or
-- `before` (events below it, newest first; 0: from the newest). Returns {epoch, offset, id, bytes, ...}.
local epoch, offset = current(KEYS[1], KEYS[2], ARGV[4], ARGV[3])
local reply = {epoch, offset}
local from, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local range = {}
if limit > 0 and ARGV[5] == 'before' then
  if from == 0 then
    range = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', limit)
  elseif from > 1 then
    range = redis.call('XREVRANGE', KEYS[1], string.format('%d-0', from - 1), '-', 'COUNT', limit)
  end
elseif limit > 0 and offset > from then
  range = redis.call('XRANGE', KEYS[1], string.format('%d-0', from + 1), '+', 'COUNT', limit)
end
for _, entry in ipairs(range) do
  reply[#reply + 1] = entry[1]
  reply[#reply + 1] = entry[2][2]
end
return reply
