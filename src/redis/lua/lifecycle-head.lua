-- Shared head of the lifecycle scripts. KEYS[1]: the events stream. Every other key is named from it
-- and carries its {hash tag}, so the state that decides an event and the stream it is appended to
-- share one slot: deciding and appending are one atomic step, on one shard, in every topology.
--   <stream>:u:<user>   hash: on (1 while the backend was told online), seen (ms), v (version)
--   <stream>:um:<user>  zset: connection id -> expiry (ms)
--   <stream>:r:<room>   hash: on, seen, v, as for a user
--   <stream>:rm:<room>  zset: node id -> expiry (ms)
--   <stream>:due        zset: 'u:<user>' or 'r:<room>' -> when to decide whether it is gone
-- ARGV[1]: stream cap (approximate MAXLEN), ARGV[2]: member ttl (ms), ARGV[3]: grace (ms),
-- ARGV[4]: the event types produced, space-separated. The clock is the server's.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stream, maxlen, ttl, grace = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local produced = ' ' .. ARGV[4] .. ' '
local due = stream .. ':due'
-- A user's or room's state outlives its members by this much, so a version never goes back.
local STATE_LIFE = 86400000
local emitted = {}

local EVENTS = { u = { 'user.online', 'user.offline', 'user_id' }, r = { 'room.occupied', 'room.vacated', 'room' } }

local function emit(kind, fields)
  if not string.find(produced, ' ' .. kind .. ' ', 1, true) then return end
  fields.type = kind
  fields.time = now
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'type', kind, 'event', cjson.encode(fields))
  emitted[#emitted + 1] = kind
end

-- Versions are at least the clock in ms and grow by one at each event of that user or room.
local function bump(state)
  local v = math.max(tonumber(redis.call('HGET', state, 'v') or '0') + 1, now)
  redis.call('HSET', state, 'v', v)
  return v
end

local function names(kind, id)
  return stream .. ':' .. kind .. ':' .. id, stream .. ':' .. kind .. 'm:' .. id
end

-- A member (connection or node) is there until now + ttl: the first one makes its user online or its room occupied.
local function appear(kind, id, member)
  local state, members = names(kind, id)
  redis.call('ZADD', members, now + ttl, member)
  redis.call('ZADD', due, now + ttl + grace, kind .. ':' .. id)
  redis.call('HDEL', state, 'seen')
  if redis.call('HGET', state, 'on') ~= '1' then
    redis.call('HSET', state, 'on', '1')
    local fields = { version = bump(state) }
    fields[EVENTS[kind][3]] = id
    emit(EVENTS[kind][1], fields)
  end
  redis.call('PEXPIRE', state, STATE_LIFE)
  redis.call('PEXPIRE', members, STATE_LIFE)
end

-- A member left: the last one starts the grace window; the sweep decides when it ends.
local function disappear(kind, id, member)
  local state, members = names(kind, id)
  redis.call('ZREM', members, member)
  redis.call('ZREMRANGEBYSCORE', members, '-inf', now)
  if redis.call('ZCARD', members) > 0 or redis.call('HGET', state, 'on') ~= '1' then return end
  redis.call('HSET', state, 'seen', now)
  redis.call('ZADD', due, now + grace, kind .. ':' .. id)
end

-- A due entry: still there (look again when its last member could expire), back within the grace
-- window (nothing), or gone for the whole window, also when its node died and its members expired
-- (last seen at that node's last refresh): the one offline or vacated event.
local function settle(entry)
  local kind, id = string.sub(entry, 1, 1), string.sub(entry, 3)
  local state, members = names(kind, id)
  local expired = redis.call('ZRANGEBYSCORE', members, '-inf', now, 'WITHSCORES')
  redis.call('ZREMRANGEBYSCORE', members, '-inf', now)
  local last = redis.call('ZRANGE', members, -1, -1, 'WITHSCORES')
  if #last > 0 then
    redis.call('ZADD', due, tonumber(last[2]) + grace, entry)
    return
  end
  if redis.call('HGET', state, 'on') ~= '1' then
    redis.call('ZREM', due, entry)
    return
  end
  local seen = tonumber(redis.call('HGET', state, 'seen') or '0')
  if #expired > 0 then seen = math.max(seen, tonumber(expired[#expired]) - ttl) end
  if seen == 0 then seen = now end
  if now < seen + grace then
    redis.call('HSET', state, 'seen', seen)
    redis.call('ZADD', due, seen + grace, entry)
    return
  end
  redis.call('HDEL', state, 'on', 'seen')
  redis.call('ZREM', due, entry)
  local fields = { version = bump(state) }
  fields[EVENTS[kind][3]] = id
  if kind == 'u' then fields.last_seen = seen end
  emit(EVENTS[kind][2], fields)
end
