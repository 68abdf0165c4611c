-- Shared by the history scripts (scripts.ts puts it in front of each): the room's current epoch and
-- offset. A new epoch, with an empty stream, when the metadata is missing (never written, expired,
-- evicted, Redis restarted empty) or was written by another server process (run_id): a restart or
-- a failover may have lost writes whose offsets clients have already seen.
local function current(stream, meta, candidate, ttl)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
  local m = redis.call('HMGET', meta, 'epoch', 'offset', 'run')
  if m[1] and m[3] == run then
    return m[1], tonumber(m[2])
  end
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', candidate, 'offset', 0, 'run', run)
  redis.call('EXPIRE', meta, ttl)
  return candidate, 0
end
