-- KEYS[1]: the room's stream (entry id <offset>-0, field d: the event's bytes); KEYS[2]: its
-- metadata hash (epoch, offset, run); KEYS[3]: the publish's idempotency record. All carry the
-- hash tag of the room channel's slot.
-- ARGV: the room channel, PUBLISH or SPUBLISH, the frame header up to the room, the envelope head
-- (no closing brace), events kept, ttl s, an epoch for a new stream, the idempotency key ('' for
-- none), its window s, and optionally the connection id that must not receive the event (the
-- publish's exclude_connection: appended to the frame header, never stored).
-- Appends, publishes the frame and returns {epoch, offset, 0}: one order per room for every node.
-- A key seen within its window returns the first publish's {epoch, offset, 1} and publishes nothing.
if ARGV[8] ~= '' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local space = string.find(seen, ' ', 1, true)
    return {string.sub(seen, 1, space - 1), tonumber(string.sub(seen, space + 1)), 1}
  end
end
local epoch, offset = current(KEYS[1], KEYS[2], ARGV[7], ARGV[6])
offset = offset + 1
local payload = ARGV[4] .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[5], offset .. '-0', 'd', payload)
redis.call('HSET', KEYS[2], 'offset', offset)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
if ARGV[8] ~= '' then
  redis.call('SET', KEYS[3], epoch .. ' ' .. offset, 'EX', ARGV[9])
end
local except = ''
if ARGV[10] and ARGV[10] ~= '' then
  except = ' ' .. ARGV[10]
end
redis.call(ARGV[2], ARGV[1], ARGV[3] .. ' ' .. epoch .. ' ' .. offset .. except .. '\n' .. payload)
return {epoch, offset, 0}
