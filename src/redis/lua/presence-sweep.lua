-- Shared head of the presence scripts. KEYS: 1 entries (zset connection -> expiry ms), 2 owners
-- (hash connection -> user), 3 users (hash user -> connections), 4 names (hash user -> username),
-- 5 version. All in the room channel's slot. The clock is the server's, so nodes' clocks never
-- disagree about an expiry. A user joins when their first entry appears and leaves when their last
-- one goes: this script decides it atomically, so an expired entry is seen expire exactly once.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local changes = {}

-- Versions are at least the clock in ms: a room that comes back never reuses one a client has seen.
local function bump()
  local v = math.max(tonumber(redis.call('GET', KEYS[5]) or '0') + 1, now)
  redis.call('SET', KEYS[5], v)
  return v
end

local function change(kind, user, name, reason)
  local v = bump()
  local users = redis.call('HLEN', KEYS[3])
  for _, field in ipairs({ kind, user, name, v, users, reason }) do changes[#changes + 1] = field end
end

local function drop(conn, reason)
  local user = redis.call('HGET', KEYS[2], conn)
  redis.call('ZREM', KEYS[1], conn)
  if not user then return end
  redis.call('HDEL', KEYS[2], conn)
  if redis.call('HINCRBY', KEYS[3], user, -1) > 0 then return end
  redis.call('HDEL', KEYS[3], user)
  local name = redis.call('HGET', KEYS[4], user) or user
  redis.call('HDEL', KEYS[4], user)
  change('leave', user, name, reason)
end

-- Adds the entry, or moves its expiry; the user's first entry is their join.
local function add(conn, user, name, expires)
  if redis.call('ZADD', KEYS[1], expires, conn) == 0 then return end
  redis.call('HSET', KEYS[2], conn, user)
  if redis.call('HINCRBY', KEYS[3], user, 1) == 1 then
    redis.call('HSET', KEYS[4], user, name)
    change('join', user, name, '')
  end
end

local function sweep()
  for _, conn in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do drop(conn, 'expired') end
end

-- An empty room leaves only its version (so a quick comeback goes on above it), which then expires;
-- otherwise its keys live as long as an entry could.
local function finish(life_ms)
  if redis.call('ZCARD', KEYS[1]) == 0 then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
    if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('PEXPIRE', KEYS[5], life_ms) end
  else
    for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], life_ms) end
  end
end

sweep()
