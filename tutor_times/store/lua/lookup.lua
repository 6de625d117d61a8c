-- The open session an activity continues, in one round trip (rule R2).
--
-- KEYS[1]  the session key's hash: {sid = open session id, last = its last activity (µs)}
-- ARGV[1]  t: the activity's time, microseconds since the epoch
-- ARGV[2]  the session timeout, microseconds
-- ARGV[3]  the key's TTL, milliseconds (the timeout)
--
-- Returns the cached session id when t - last < timeout, else false (the key is missing, or
-- t starts a new session: SQL decides). `last` only moves forward; the TTL is refreshed.
local cur = redis.call('HMGET', KEYS[1], 'sid', 'last')
if not cur[1] then return false end
local t = tonumber(ARGV[1])
local last = tonumber(cur[2])
if t - last >= tonumber(ARGV[2]) then return false end
if t > last then redis.call('HSET', KEYS[1], 'last', ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return cur[1]
