-- promote.lua: move due members of P:scheduled into their ready streams.
-- Safe to run from any number of masters at once: read, write and ZREM
-- happen in one atomic call, so a member is promoted exactly once.
--
-- KEYS[1] P:scheduled, KEYS[2] P:default:dead-letter (for undecodable members)
-- ARGV[1] now (ms), ARGV[2] max members to move, ARGV[3] prefix P,
-- ARGV[4] dead-letter MAXLEN (approximate)
-- Routing (WIRE.md): streamKey, else P:<priority>, else P:default; a
-- streamKey outside the prefix, or a member that is not a JSON object with
-- a taskName, is parked in KEYS[2] with reason 'malformed'.
-- Cancelled jobs (KEYS[3] P:cancels non-empty, and P:cancel:<jobId> set) are
-- dropped instead: their cancel is carried out (DEL, ZREM), their status
-- (P:result:<jobId>, if kept) says 'cancelled'. ARGV[5] is the cancel key
-- head (P:cancel:), ARGV[6] the result key head (P:result:), ARGV[7] the unique
-- marker head (P:unique:): a unique job's id is free again.
-- Returns: {moved, parked, next due score or -1}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local prefix = ARGV[3]
local head = prefix .. ':'
local moved, parked = 0, 0
-- the per-job check costs only while some cancel is pending
local cancels = KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1

local function text(v)
  local t = type(v)
  if t == 'string' then return v end
  if t == 'number' then
    if v == math.floor(v) and math.abs(v) < 1e15 then return string.format('%d', v) end
    return tostring(v)
  end
  if t == 'boolean' then return tostring(v) end
  return cjson.encode(v)
end

local function park(member, why)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
    'taskName', '', 'payload', 'null', 'enqueuedAt', '0', 'originalId', '',
    'deadLetteredAt', ARGV[1], 'deliveryCount', '0', 'queue', KEYS[1],
    'reason', 'malformed', 'errorType', 'UndecodableScheduledMember',
    'errorMessage', why, 'traceback', '', 'consumer', '', 'member', member)
  parked = parked + 1
end

for _, member in ipairs(due) do
  local ok, job = pcall(cjson.decode, member)
  if not ok or type(job) ~= 'table' or type(job.taskName) ~= 'string' or job.taskName == '' then
    park(member, 'scheduled member is not a JSON object with a taskName')
  elseif cancels and type(job.jobId) == 'string' and redis.call('EXISTS', ARGV[5] .. job.jobId) == 1 then
    redis.call('DEL', ARGV[5] .. job.jobId)
    redis.call('ZREM', KEYS[3], job.jobId)
    local rk = ARGV[6] .. job.jobId
    if redis.call('EXISTS', rk) == 1 then
      redis.call('HSET', rk, 'status', 'cancelled', 'updatedAt', ARGV[1])
    end
    if job.unique == '1' or job.unique == 1 then redis.call('DEL', ARGV[7] .. job.jobId) end
  else
    local stream = job.streamKey
    if type(stream) ~= 'string' or stream == '' then
      if type(job.priority) == 'string' and job.priority ~= '' then
        stream = head .. job.priority
      else
        stream = head .. 'default'
      end
    end
    if string.sub(stream, 1, #head) ~= head or string.find(stream, ':', #head + 1, true) then
      park(member, 'scheduled member routes outside prefix ' .. prefix .. ': ' .. stream)
    else
      local payload = job.payload
      if payload == nil then payload = 'null' elseif type(payload) ~= 'string' then payload = cjson.encode(payload) end
      local fields = {'taskName', job.taskName, 'payload', payload}
      for k, v in pairs(job) do
        if k ~= 'taskName' and k ~= 'payload' and k ~= 'streamKey' and k ~= 'priority' and v ~= cjson.null then
          fields[#fields + 1] = k
          fields[#fields + 1] = text(v)
        end
      end
      local res = redis.pcall('XADD', stream, '*', unpack(fields))
      if type(res) == 'table' and res.err then
        park(member, 'cannot add to ' .. stream .. ': ' .. res.err)
      else
        moved = moved + 1
      end
    end
  end
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if nxt[2] then next_due = tonumber(nxt[2]) end
return {moved, parked, next_due}
