-- chord_done.lua: shared by settle.lua and reclaim.lua (spliced in where a
-- script says `-- #include chord_done`; not a script of its own).
--
-- chord_done(key, now, consumer, write): the last member of the group at
-- KEYS-less key `key` (P:chord:<id>) settled: mark the group ended and, for a
-- chord, enqueue its callback with the members' results in member order (or
-- dead-letter it, by its failure policy). `now` is epoch ms as text,
-- `consumer` names this worker in a dead letter, and `write(...)` runs the
-- callback's XADD (settle.lua reports a refusal, reclaim.lua raises).
local function chord_done(key, now, consumer, write)
  local h = redis.call('HMGET', key, 'total', 'failed', 'cb', 'cbp', 'cbs', 'policy', 'state', 'id', 'dlq', 'ttl',
    'rk', 'rttl')
  if h[7] == 'cancelled' then return end
  local total, failed = tonumber(h[1]), tonumber(h[2])
  redis.call('HSET', key, 'state', failed > 0 and 'failed' or 'done')
  redis.call('PEXPIRE', key, h[10])
  if not h[3] or h[3] == '' then return end
  local results, failures = {}, {}
  for s = 0, total - 1, 1000 do
    local names, enames = {}, {}
    for j = s, math.min(s + 999, total - 1) do
      names[#names + 1] = 'r' .. j
      enames[#enames + 1] = 'e' .. j
    end
    local vals = redis.call('HMGET', key, unpack(names))
    local errs = redis.call('HMGET', key, unpack(enames))
    for j = 1, #names do
      results[#results + 1] = vals[j] or 'null'
      if errs[j] then failures[#failures + 1] = errs[j] end
    end
  end
  local payload = '{"chord":"' .. h[8] .. '","payload":' .. h[4] .. ',"results":[' .. table.concat(results, ',') ..
    '],"failures":[' .. table.concat(failures, ',') .. ']}'
  local fields = cjson.decode(h[3])
  fields[#fields + 1] = 'payload'
  fields[#fields + 1] = payload
  local rk = h[11]
  if failed > 0 and h[6] == 'dead-letter' then
    if rk and rk ~= '' then
      redis.call('HSET', rk, 'status', 'dead', 'reason', 'failed', 'errorType', 'ChordFailed',
        'errorMessage', failed .. ' of ' .. total .. ' members failed', 'updatedAt', now)
      redis.call('PEXPIRE', rk, h[12])
    end
    for _, kv in ipairs({{'originalId', ''}, {'deadLetteredAt', now}, {'deliveryCount', '0'}, {'queue', h[5]},
        {'reason', 'failed'}, {'errorType', 'ChordFailed'},
        {'errorMessage', failed .. ' of ' .. total .. ' members of chord ' .. h[8] .. ' failed'},
        {'traceback', ''}, {'consumer', consumer}}) do
      fields[#fields + 1] = kv[1]
      fields[#fields + 1] = kv[2]
    end
    write('XADD', h[9], 'MAXLEN', '~', 10000, '*', unpack(fields))
  else
    write('XADD', h[5], '*', unpack(fields))
    if rk and rk ~= '' then
      redis.call('HSET', rk, 'status', 'queued', 'updatedAt', now)
      redis.call('PEXPIRE', rk, h[12])
    end
  end
end
