-- Caches the open session SQL chose for a key.
--
-- KEYS[1]  the session key's hash: {sid, last}
-- ARGV[1]  sid: the open session's id
-- ARGV[2]  last: its last activity, microseconds since the epoch
-- ARGV[3]  the key's TTL, milliseconds
-- ARGV[4]  stale: a session id SQL has just refused for this key, or '' for none
--
-- A newer session (a larger id) already cached wins, except over `stale`, which is replaced
-- whatever its number (ids restart after a database restore). `last` never moves backwards.
-- Returns 1 when the key now holds sid, 0 when a newer session was kept.
local cur = redis.call('HMGET', KEYS[1], 'sid', 'last')
local sid = tonumber(ARGV[1])
if cur[1] and cur[1] ~= ARGV[4] then
  local csid = tonumber(cur[1])
  if csid > sid then return 0 end
  if csid == sid and tonumber(cur[2]) >= tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
end
redis.call('HSET', KEYS[1], 'sid', ARGV[1], 'last', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
