-- renew.lua: reset the idle time of this consumer's in-flight entries
-- (XCLAIM ... JUSTID does not count a delivery), so the reclaimers of other
-- workers never take a healthy job that simply runs long. Only entries
-- still pending for this consumer are touched: one reclaimed by another
-- worker meanwhile stays theirs. An id pending for nobody is skipped
-- quietly: its ack (sent by this worker on another connection a moment ago)
-- won the race, or the group was recreated; neither is a reclaim.
--
-- KEYS: the ready streams
-- ARGV[1] group, ARGV[2] consumer, then per stream: <n>, id1 .. idn
-- Returns: the number of ids now pending for another consumer.
local group, me = ARGV[1], ARGV[2]
local lost = 0
local i = 3
for k = 1, #KEYS do
  local count = tonumber(ARGV[i])
  local mine = {}
  for j = i + 1, i + count do
    local p = redis.call('XPENDING', KEYS[k], group, ARGV[j], ARGV[j], 1)
    if p[1] ~= nil and p[1][2] == me then
      mine[#mine + 1] = ARGV[j]
    elseif p[1] ~= nil then
      lost = lost + 1
    end
  end
  for s = 1, #mine, 1000 do
    local args = {'XCLAIM', KEYS[k], group, me, 0}
    for j = s, math.min(s + 999, #mine) do args[#args + 1] = mine[j] end
    args[#args + 1] = 'JUSTID'
    redis.call(unpack(args))
  end
  i = i + count + 1
end
return lost
