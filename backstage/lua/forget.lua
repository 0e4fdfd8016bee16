-- forget.lua: remove consumers that hold no pending entries and have been
-- idle longer than the given time (workers that died; their entries were
-- reclaimed). Check and delete are one atomic step, so a consumer that reads
-- new entries in between is never deleted with them. A live worker whose
-- consumer is removed while idle gets it back at its next read.
--
-- KEYS: the ready streams
-- ARGV[1] group, ARGV[2] this worker's consumer (never removed), ARGV[3] min idle ms
-- Returns: the names of the consumers removed.
local removed = {}
for _, key in ipairs(KEYS) do
  local consumers = redis.pcall('XINFO', 'CONSUMERS', key, ARGV[1])
  if not consumers.err then
    for _, c in ipairs(consumers) do
      local name, pending, idle
      for j = 1, #c, 2 do
        if c[j] == 'name' then name = c[j + 1]
        elseif c[j] == 'pending' then pending = c[j + 1]
        elseif c[j] == 'idle' then idle = c[j + 1] end
      end
      if name ~= ARGV[2] and pending == 0 and idle > tonumber(ARGV[3]) then
        redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], name)
        removed[#removed + 1] = name
      end
    end
  end
end
return removed
