-- reclaim.lua: take over entries that stayed pending longer than the idle
-- timeout (their worker died: live workers renew theirs), dead-letter the
-- ones delivered too often, and clean PEL entries whose stream entry is gone.
--
-- KEYS: the ready streams, then their dead-letter streams in the same order
-- ARGV[1] group, ARGV[2] consumer (the new owner), ARGV[3] min idle ms,
-- ARGV[4] max entries to take, ARGV[5] max deliveries, ARGV[6] dead-letter
-- MAXLEN (approximate), ARGV[7] now ms, ARGV[8] '1' to XDEL what is acked,
-- ARGV[9 ..] the XAUTOCLAIM cursor of each stream
-- Returns: {entries, cursors, dead, cleaned} where entries is a flat array
--   {stream index, id, {field, value, ...}, delivery count, ...}
local n = #KEYS / 2
local group, me = ARGV[1], ARGV[2]
local want = tonumber(ARGV[4])
local max_deliveries = tonumber(ARGV[5])
local out, cursors = {}, {}
local dead, cleaned = 0, 0
for i = 1, n do
  local key = KEYS[i]
  cursors[i] = ARGV[8 + i]
  if want > 0 then
    local res = redis.pcall('XAUTOCLAIM', key, group, me, ARGV[3], ARGV[8 + i], 'COUNT', want)
    if type(res) == 'table' and res.err then
      if not string.find(res.err, 'NOGROUP', 1, true) then return redis.error_reply(res.err) end
      cursors[i] = '0-0'  -- no group (yet): fetch.lua creates it
    else
      cursors[i] = res[1]
      for _, e in ipairs(res[2]) do
        local id, fields = e[1], e[2]
        if type(fields) ~= 'table' then
          -- Redis 6.2: the entry was deleted from the stream; drop it from the PEL
          redis.call('XACK', key, group, id)
          cleaned = cleaned + 1
        else
          local p = redis.call('XPENDING', key, group, id, id, 1)
          local deliveries = p[1] and p[1][4] or 1
          if deliveries > max_deliveries then
            local f = {}
            for j = 1, #fields do f[j] = fields[j] end
            for _, kv in ipairs({
              {'originalId', id}, {'deadLetteredAt', ARGV[7]}, {'deliveryCount', tostring(deliveries)},
              {'queue', key}, {'reason', 'max-deliveries'}, {'errorType', 'MaxDeliveries'},
              {'errorMessage', 'delivered ' .. deliveries .. ' times without an outcome (its worker died each time)'},
              {'traceback', ''}, {'consumer', me}}) do
              f[#f + 1] = kv[1]
              f[#f + 1] = kv[2]
            end
            redis.call('XADD', KEYS[n + i], 'MAXLEN', '~', ARGV[6], '*', unpack(f))
            redis.call('XACK', key, group, id)
            if ARGV[8] == '1' then redis.call('XDEL', key, id) end
            dead = dead + 1
          else
            out[#out + 1] = i
            out[#out + 1] = id
            out[#out + 1] = fields
            out[#out + 1] = deliveries
            want = want - 1
          end
        end
      end
      -- Redis 7: ids of deleted entries XAUTOCLAIM removed from the PEL itself
      if res[3] then cleaned = cleaned + #res[3] end
    end
  end
end
return {out, cursors, dead, cleaned}
