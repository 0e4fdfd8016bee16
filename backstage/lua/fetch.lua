-- fetch.lua: read up to COUNT new entries for one consumer, in strict
-- priority order across streams (one XREADGROUP over several streams would
-- return COUNT from *each*), creating a missing consumer group on the way.
--
-- KEYS: the ready streams, most urgent first.
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] count
-- Returns: {entries, tails} where entries is a flat array
--   {stream index, entry id, {field, value, ...}, ...}
-- and tails, when fewer than COUNT were found, holds each stream's
-- last-generated-id (so the caller can XREAD BLOCK from exactly there
-- without missing an entry added in between); otherwise it is empty.
local want = tonumber(ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do
  if want <= 0 then break end
  local res = redis.pcall('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want, 'STREAMS', key, '>')
  if type(res) == 'table' and res.err then
    if string.find(res.err, 'NOGROUP', 1, true) then
      -- FLUSHDB, failover, or a new queue: (re)create the group from the start
      redis.call('XGROUP', 'CREATE', key, ARGV[1], '0', 'MKSTREAM')
      res = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want, 'STREAMS', key, '>')
    else
      return redis.error_reply(res.err)
    end
  end
  if res then
    for _, e in ipairs(res[1][2]) do
      out[#out + 1] = i
      out[#out + 1] = e[1]
      out[#out + 1] = e[2]
      want = want - 1
    end
  end
end
local tails = {}
if want > 0 then
  for i, key in ipairs(KEYS) do
    local info = redis.call('XINFO', 'STREAM', key)
    local last = '0-0'
    for j = 1, #info, 2 do
      if info[j] == 'last-generated-id' then last = info[j + 1] end
    end
    tails[i] = last
  end
end
return {out, tails}
