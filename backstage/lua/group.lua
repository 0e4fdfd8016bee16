-- group.lua: write a group or chord and all its members in one atomic step:
-- the state hash P:chord:<id> (counters, callback, TTL) and one XADD per member.
--
-- KEYS[1] P:chord:<id>; KEYS[2 ..] the members' ready streams, referenced from ARGV
-- ARGV[1] now (ms), then the group header (11 values, the same as settle.lua's 'g'):
--   <ttl ms>, <total>, <on_failure: 'callback' | 'dead-letter'>,
--   <callback fields: JSON array field, value, ... without payload, or '' for a group>,
--   <callback payload JSON>, <callback stream>, <callback dead-letter stream>, <id>,
--   <member job ids: JSON array>, <callback's status key P:result:<id> or ''>, <its TTL ms>
-- then per member: <stream idx>, <n>, f1 .. fn (each member's fields carry chordId and chordIndex)
-- Returns: 1 written, 0 refused (a group with this id exists).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local a = 2
redis.call('HSET', KEYS[1], 'ttl', ARGV[a], 'total', ARGV[a + 1], 'left', ARGV[a + 1], 'failed', 0,
  'policy', ARGV[a + 2], 'cb', ARGV[a + 3], 'cbp', ARGV[a + 4], 'cbs', ARGV[a + 5], 'dlq', ARGV[a + 6],
  'id', ARGV[a + 7], 'ids', ARGV[a + 8], 'rk', ARGV[a + 9], 'rttl', ARGV[a + 10], 'state', 'running',
  'createdAt', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[a])
if ARGV[a + 9] ~= '' then  -- the callback keeps a status: 'waiting' for its members
  redis.call('DEL', ARGV[a + 9])
  redis.call('HSET', ARGV[a + 9], 'status', 'waiting', 'updatedAt', ARGV[1])
  redis.call('PEXPIRE', ARGV[a + 9], ARGV[a + 10])
end
local i = a + 11
local n = #ARGV
while i <= n do
  local nf = tonumber(ARGV[i + 1])
  redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', unpack(ARGV, i + 2, i + 1 + nf))
  i = i + 2 + nf
end
return 1
