-- cancel.lua: cancel a job (or a group/chord and its members) atomically.
-- The cancel is kept in Redis until it is carried out or expires, so a
-- cancel issued while no worker runs is honoured when one starts. Masters
-- read P:cancels each housekeeping tick (one ZRANGEBYSCORE, usually empty);
-- promote.lua drops cancelled scheduled members.
--
-- KEYS[1] P:cancel:<id>, KEYS[2] P:cancels, KEYS[3] P:result:<id>, KEYS[4] P:chord:<id>
-- ARGV[1] now (ms), ARGV[2] cancel TTL (ms), ARGV[3] id, ARGV[4] the cancel key of
--   a member without its id (P:cancel:), ARGV[5] the result key head (P:result:)
-- Returns: {status before, members cancelled}: status is the job's status hash
--   value ('' when none is kept); members counts the pending members of a chord.
local now, ttl, id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local expiry = now + tonumber(ttl)
local function mark(job_id, cancel_key, result_key)
  redis.call('SET', cancel_key, '1', 'PX', ttl)
  redis.call('ZADD', KEYS[2], expiry, job_id)
  -- a job that has not started never will: say so now (running ones say it when killed)
  local st = redis.call('HGET', result_key, 'status')
  if st == 'queued' or st == 'scheduled' then
    redis.call('HSET', result_key, 'status', 'cancelled', 'updatedAt', ARGV[1])
  end
  return st or ''
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local before = mark(id, KEYS[1], KEYS[3])
local members = 0
if redis.call('EXISTS', KEYS[4]) == 1 then
  local h = redis.call('HMGET', KEYS[4], 'state', 'ids')
  if h[1] == 'running' then
    redis.call('HSET', KEYS[4], 'state', 'cancelled')
    local ids = cjson.decode(h[2])
    for j, mid in ipairs(ids) do
      if redis.call('HEXISTS', KEYS[4], 'r' .. (j - 1)) == 0 then
        mark(mid, ARGV[4] .. mid, ARGV[5] .. mid)
        members = members + 1
      end
    end
  end
end
return {before, members}
