-- cron_fire.lua: fire one cron tick exactly once across all masters.
--
-- KEYS[1] tick marker P:cron:<name>:<tick ms>, KEYS[2] P:cron:<name>:last,
-- KEYS[3] the target ready stream
-- ARGV[1] marker TTL ms, ARGV[2] tick ms, ARGV[3 ..] the entry's fields
-- Returns: 1 if this call fired the tick, 0 if it was fired already (by
-- another master, or a later tick was: ticks never fire out of order).
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) <= last then return 0 end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], ARGV[2])
return 1
