-- enqueue.lua: add jobs to ready streams or the scheduled set, with dedupe,
-- each job atomically (dedupe check, write, dedupe marker) and the whole
-- batch in one call.
--
-- KEYS: every key the batch touches (streams, P:scheduled, P:dedupe:<k>),
--       referenced from ARGV by 1-based index.
-- ARGV: a sequence of jobs, each one of
--   'x', <stream idx>, <dedupe idx or 0>, <dedupe ttl ms>, <n>, f1, v1, ... (n args)
--   'z', <scheduled idx>, <dedupe idx or 0>, <dedupe ttl ms>, <score ms>, <member>
-- Returns: an array with, per job, 1 (enqueued) or 0 (deduplicated).
--
-- The marker is set only after the write succeeded: a failing XADD/ZADD
-- aborts the script before it, so a failed enqueue leaves no dedupe marker.
local out = {}
local i = 1
local n = #ARGV
local j = 0
while i <= n do
  local mode = ARGV[i]
  local key = KEYS[tonumber(ARGV[i + 1])]
  local di = tonumber(ARGV[i + 2])
  local skip = di > 0 and redis.call('EXISTS', KEYS[di]) == 1
  local step
  if mode == 'x' then
    local nf = tonumber(ARGV[i + 4])
    if not skip then
      redis.call('XADD', key, '*', unpack(ARGV, i + 5, i + 4 + nf))
    end
    step = 5 + nf
  elseif mode == 'z' then
    if not skip then
      redis.call('ZADD', key, ARGV[i + 4], ARGV[i + 5])
    end
    step = 6
  else
    return redis.error_reply('enqueue.lua: bad job mode ' .. tostring(mode))
  end
  j = j + 1
  if skip then
    out[j] = 0
  else
    if di > 0 then
      redis.call('SET', KEYS[di], '1', 'PX', ARGV[i + 3])
    end
    out[j] = 1
  end
  i = i + step
end
return out
