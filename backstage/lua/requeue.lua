-- requeue.lua: move dead-letter entries back to ready streams as fresh jobs,
-- each entry atomically: the copy is XADDed to its ready stream and the entry
-- XDELed from the dead-letter stream in the same call, so a job is never lost
-- and never doubled, and an interrupted requeue can simply be run again (what
-- was moved is gone from the dead-letter stream; what was not is still there).
--
-- KEYS[1] the dead-letter stream P:<queue>:dead-letter; KEYS[2 ..] the ready
--         streams to move entries to, referenced from ARGV by 1-based index
-- ARGV[1] n, then ARGV[2 .. n+1] the field names dropped from each copy (the
--         dead-letter fields, and 'attempt' so the job gets all its attempts again)
-- ARGV[n+2 ..] pairs: <entry id> (full 'ms-seq' form), <index of its ready stream in KEYS>
-- Each id is handled on its own. The copy is made from the entry as it is
-- now (XRANGE id id), never from what the caller read earlier.
-- Returns: {codes, err}: codes[i], for the i-th pair, is 1 moved, 0 already
--   gone (requeued or purged by someone else), -1 left in place (no taskName:
--   not a job). err is '' - or the message of an XADD that failed (WRONGTYPE,
--   OOM, ...): handling stops there, codes covers only the pairs before it,
--   and that entry and the ones after it stay in the dead-letter stream.
local dlq = KEYS[1]
local ndrop = tonumber(ARGV[1])
local drop = {}
for i = 2, ndrop + 1 do drop[ARGV[i]] = true end

local codes = {}
for i = ndrop + 2, #ARGV, 2 do
  local id, target = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  local found = redis.call('XRANGE', dlq, id, id)
  if #found == 0 then
    codes[#codes + 1] = 0
  else
    local fields = found[1][2]
    local copy, task = {}, nil
    for j = 1, #fields, 2 do
      local k = fields[j]
      if k == 'taskName' then task = fields[j + 1] end
      if not drop[k] then
        copy[#copy + 1] = k
        copy[#copy + 1] = fields[j + 1]
      end
    end
    if task == nil or task == '' then
      codes[#codes + 1] = -1
    else
      local res = redis.pcall('XADD', target, '*', unpack(copy))
      if type(res) == 'table' and res.err then
        return {codes, 'cannot add ' .. id .. ' to ' .. target .. ': ' .. res.err}
      end
      redis.call('XDEL', dlq, id)
      codes[#codes + 1] = 1
    end
  end
end
return {codes, ''}
