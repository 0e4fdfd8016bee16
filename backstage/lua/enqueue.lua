-- enqueue.lua: add jobs to ready streams or the scheduled set, with dedupe
-- and opt-in result tracking, each job atomically (dedupe check, write,
-- dedupe marker, initial status) and the whole batch in one call.
--
-- KEYS: every key the batch touches (streams, P:scheduled, P:dedupe:<k>,
--       P:result:<job id>), referenced from ARGV by 1-based index.
-- ARGV: ARGV[1] now (ms), then a sequence of jobs, each one of
--   'x', <stream idx>, <dedupe idx or 0>, <dedupe ttl ms>, <result idx or 0>, <result ttl ms>,
--        <task>, <n>, f1, v1, ... (n args)
--   'z', <scheduled idx>, <dedupe idx or 0>, <dedupe ttl ms>, <result idx or 0>, <result ttl ms>,
--        <task>, <score ms>, <member>
-- Returns: an array with, per job, 1 (enqueued) or 0 (deduplicated).
--
-- The marker is set only after the write succeeded: a failing XADD/ZADD
-- aborts the script before it, so a failed enqueue leaves no dedupe marker.
local out = {}
local i = 2
local n = #ARGV
local j = 0
while i <= n do
  local mode = ARGV[i]
  local key = KEYS[tonumber(ARGV[i + 1])]
  local di = tonumber(ARGV[i + 2])
  local ri = tonumber(ARGV[i + 4])
  local skip = di > 0 and redis.call('EXISTS', KEYS[di]) == 1
  local step, status
  if mode == 'x' then
    local nf = tonumber(ARGV[i + 7])
    if not skip then
      redis.call('XADD', key, '*', unpack(ARGV, i + 8, i + 7 + nf))
    end
    step, status = 8 + nf, 'queued'
  elseif mode == 'z' then
    if not skip then
      redis.call('ZADD', key, ARGV[i + 7], ARGV[i + 8])
    end
    step, status = 9, 'scheduled'
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
    if ri > 0 then
      redis.call('DEL', KEYS[ri])
      redis.call('HSET', KEYS[ri], 'status', status, 'task', ARGV[i + 6], 'updatedAt', ARGV[1])
      redis.call('PEXPIRE', KEYS[ri], ARGV[i + 5])
    end
    out[j] = 1
  end
  i = i + step
end
return out
