-- reclaim.lua: take over entries that stayed pending longer than the idle
-- timeout (their worker died: live workers renew theirs), dead-letter the
-- ones delivered too often, and clean PEL entries whose stream entry is gone.
--
-- Only our masters renew their entries. An entry of a consumer that is not
-- one of ours (not in P:workers, where our masters, alive or recently dead,
-- are listed) may belong to a live Go or TypeScript worker running a long
-- job: it is taken only once idle past the longer foreign idle timeout.
--
-- KEYS: the ready streams, then their dead-letter streams in the same order,
--       then P:workers (last)
-- ARGV[1] group, ARGV[2] consumer (the new owner), ARGV[3] min idle ms,
-- ARGV[4] max entries to take, ARGV[5] max deliveries, ARGV[6] dead-letter
-- MAXLEN (approximate), ARGV[7] now ms, ARGV[8] '1' to XDEL what is acked,
-- ARGV[9] min idle ms for entries of consumers that are not ours,
-- ARGV[10 ..] the scan cursor of each stream ('0-0': from the start)
-- then (optional) the key heads P:chord: and P:unique:: a dead-lettered
-- group/chord member is recorded as failed (and its chord's callback enqueued
-- if it was the last), a unique job's id is freed, as settle.lua does for the
-- dead letters it writes
-- Returns: {entries, cursors, dead, cleaned} where entries is a flat array
--   {stream index, id, {field, value, ...}, delivery count, ...}
local n = (#KEYS - 1) / 2
local workers = KEYS[#KEYS]
local group, me = ARGV[1], ARGV[2]
local idle, foreign_idle = tonumber(ARGV[3]), tonumber(ARGV[9])
local want = tonumber(ARGV[4])
local max_deliveries = tonumber(ARGV[5])
local out, cursors = {}, {}
local dead, cleaned = 0, 0
local chord_head, unique_head = ARGV[10 + n], ARGV[11 + n]

-- #include chord_done

-- What settle.lua's 'c' and 'u' do for an entry dead-lettered here.
local function dead_lettered(fields, deliveries)
  if not chord_head then return end
  local f = {}
  for j = 1, #fields, 2 do f[fields[j]] = fields[j + 1] end
  if f.unique == '1' and f.jobId then redis.call('DEL', unique_head .. f.jobId) end
  local cid, idx = f.chordId, f.chordIndex
  if cid and idx and string.match(idx, '^%d+$') then
    local key = chord_head .. cid
    if redis.call('EXISTS', key) == 1 then
      local failure = cjson.encode({index = tonumber(idx), reason = 'max-deliveries', errorType = 'MaxDeliveries',
        errorMessage = 'delivered ' .. deliveries .. ' times without an outcome (its worker died each time)'})
      if redis.call('HSETNX', key, 'r' .. idx, 'null') == 1 then
        redis.call('HSET', key, 'e' .. idx, failure)
        redis.call('HINCRBY', key, 'failed', 1)
        if redis.call('HINCRBY', key, 'left', -1) == 0 then chord_done(key, ARGV[7], me, redis.call) end
      end
    end
  end
end

local ours = {}

local function is_ours(consumer)
  if ours[consumer] == nil then
    ours[consumer] = consumer == me or redis.call('ZSCORE', workers, consumer) ~= false
  end
  return ours[consumer]
end

local function dead_letter(i, key, id, fields, deliveries)
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
  dead_lettered(fields, deliveries)
  redis.call('XACK', key, group, id)
  if ARGV[8] == '1' then redis.call('XDEL', key, id) end
end

for i = 1, n do
  local key = KEYS[i]
  local cursor = ARGV[9 + i]
  cursors[i] = cursor
  if want > 0 then
    local start = cursor == '0-0' and '-' or '(' .. cursor
    -- scan a few times what we may take: entries of foreign consumers not yet idle enough are skipped
    local scan = math.max(want * 4, 100)
    local res = redis.pcall('XPENDING', key, group, 'IDLE', idle, start, '+', scan)
    if type(res) == 'table' and res.err then
      if not string.find(res.err, 'NOGROUP', 1, true) then return redis.error_reply(res.err) end
      cursors[i] = '0-0'  -- no group (yet): fetch.lua creates it
    else
      cursors[i] = #res < scan and '0-0' or res[#res][1]
      local take, count = {}, {}
      for _, p in ipairs(res) do
        if #take >= want then
          cursors[i] = take[#take]  -- resume after the last one taken
          break
        end
        if is_ours(p[2]) or p[3] >= foreign_idle then
          take[#take + 1] = p[1]
          count[p[1]] = p[4] + 1  -- XCLAIM counts one more delivery
        end
      end
      if #take > 0 then
        local claimed = redis.call('XCLAIM', key, group, me, idle, unpack(take))
        local got = 0
        for k = 1, #claimed do
          local e = claimed[k]
          local id, fields = nil, nil
          if type(e) == 'table' then id, fields = e[1], e[2] end
          if type(fields) ~= 'table' then
            -- Redis 6.2: the entry was deleted from the stream (a nil in its place); drop it from the PEL
            redis.call('XACK', key, group, id or take[k])
          else
            got = got + 1
            local deliveries = count[id] or 1
            if deliveries > max_deliveries then
              dead_letter(i, key, id, fields, deliveries)
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
        -- deleted entries: Redis 7 drops them from the PEL and leaves them out of the reply
        cleaned = cleaned + #take - got
      end
    end
  end
end
return {out, cursors, dead, cleaned}
