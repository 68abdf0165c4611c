-- ARGV: max users to list (0: counts only), key life ms. Returns version, users, connections,
-- the number listed, then user, username, connections of each, then the sweep's changes.
local max, life = tonumber(ARGV[1]), tonumber(ARGV[2])
local version = tonumber(redis.call('GET', KEYS[5]) or '0')
local out = { version, redis.call('HLEN', KEYS[3]), redis.call('ZCARD', KEYS[1]), 0 }
if max > 0 then
  local cursor, listed = '0', 0
  repeat
    local page = redis.call('HSCAN', KEYS[3], cursor, 'COUNT', 500)
    cursor = page[1]
    local fields = page[2]
    for i = 1, #fields, 2 do
      if listed < max then
        listed = listed + 1
        out[#out + 1] = fields[i]
        out[#out + 1] = redis.call('HGET', KEYS[4], fields[i]) or fields[i]
        out[#out + 1] = tonumber(fields[i + 1])
      end
    end
  until cursor == '0' or listed >= max
  out[4] = listed
end
finish(life)
for _, field in ipairs(changes) do out[#out + 1] = field end
return out
