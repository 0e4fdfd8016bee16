-- reconcile.lua: take back entries pending for this consumer that the
-- master does not hold: a fetch (or reclaim) ran in Redis but its reply was
-- lost with the connection (timeout, reset, restart, stall), so the master
-- never saw them. They are claimed to the same consumer again (XCLAIM with
-- min-idle 0 counts a delivery and returns the fields), dead-lettered past
-- max deliveries (a reply that is lost every time must not loop forever),
-- or dropped from the pending list when their stream entry is gone.
--
-- KEYS[1] the ready stream, KEYS[2] its dead-letter stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] max deliveries, ARGV[4]
-- dead-letter MAXLEN (approximate), ARGV[5] now ms, ARGV[6] '1' to XDEL
-- what is acked, ARGV[7 ..] the entry ids (the master's candidates)
-- Returns: {entries, dead, cleaned} where entries is a flat array
--   {id, {field, value, ...}, delivery count, ...}
-- An id no longer pending for this consumer (acked, or taken by another
-- worker meanwhile) is left alone.
local key, dlq = KEYS[1], KEYS[2]
local group, me = ARGV[1], ARGV[2]
local max_deliveries = tonumber(ARGV[3])
local out = {}
local dead, cleaned = 0, 0
for j = 7, #ARGV do
  local id = ARGV[j]
  local p = redis.call('XPENDING', key, group, id, id, 1)
  if p[1] ~= nil and p[1][2] == me then
    local deliveries = p[1][4] + 1
    local c = redis.call('XCLAIM', key, group, me, 0, id)
    local e = c[1]
    if type(e) ~= 'table' or type(e[2]) ~= 'table' then
      -- the stream entry was deleted (Redis 7 drops it from the PEL itself)
      redis.call('XACK', key, group, id)
      cleaned = cleaned + 1
    elseif deliveries > max_deliveries then
      local f = {}
      for k = 1, #e[2] do f[k] = e[2][k] end
      for _, kv in ipairs({
        {'originalId', id}, {'deadLetteredAt', ARGV[5]}, {'deliveryCount', tostring(deliveries)},
        {'queue', key}, {'reason', 'max-deliveries'}, {'errorType', 'MaxDeliveries'},
        {'errorMessage', 'delivered ' .. deliveries .. ' times without an outcome (its replies were lost)'},
        {'traceback', ''}, {'consumer', me}}) do
        f[#f + 1] = kv[1]
        f[#f + 1] = kv[2]
      end
      local res = redis.pcall('XADD', dlq, 'MAXLEN', '~', ARGV[4], '*', unpack(f))
      if type(res) == 'table' and res.err then
        -- the dead-letter stream refuses it: hand it to the master to run rather than wedge here
        out[#out + 1] = id
        out[#out + 1] = e[2]
        out[#out + 1] = deliveries
      else
        redis.call('XACK', key, group, id)
        if ARGV[6] == '1' then redis.call('XDEL', key, id) end
        dead = dead + 1
      end
    else
      out[#out + 1] = id
      out[#out + 1] = e[2]
      out[#out + 1] = deliveries
    end
  end
end
return {out, dead, cleaned}
