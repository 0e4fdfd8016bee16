-- settle.lua: commit many job outcomes at once, each atomically with its ack.
--
-- KEYS: every key touched: KEYS[1] is P:scheduled; then ready streams and
--       dead-letter streams, referenced from ARGV by 1-based index.
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] '1' to XDEL acked entries,
-- then a sequence of operations:
--   'a', <stream idx>, <n>, id1 .. idn              ack (plain success)
--   'x', <stream idx>, <id>, <target idx>, <n>, f1 .. fn
--                                                   ack, then XADD the next job
--   'z', <stream idx>, <id>, <score>, <member>      ack, then ZADD P:scheduled (retry, delayed next)
--   'd', <stream idx>, <id>, <dlq idx>, <maxlen>, <n>, f1 .. fn
--                                                   ack, then XADD to a dead-letter stream
--   'r', <stream idx>, <id>, <n>, f1 .. fn          ack, then XADD the same job back (handed back)
--   's', <stream idx>, <id>, <result idx>, <ttl ms>, <n>, f1 .. fn
--                                                   HSET the job's status hash (no ack; comes
--                                                   before the operation that acks the entry)
--   'h', <stream idx>, <id>, <history idx>, <maxlen>, <n>, f1 .. fn
--                                                   XADD a job-history record (no ack; like 's', only
--                                                   while the entry is ours, before the op that acks it)
--   'k', <stream idx>, <history idx>, <maxlen>, <queue>, <n>, then n groups of
--        <id> <jobId> <taskName> <attempt> <durationMs> <finishedAt>
--                                                   ack (plain success) and, for each entry this
--                                                   XACK acknowledged, XADD its history record
--   'u', <stream idx>, <id>, <key idx>              DEL a unique job's marker (no ack; comes
--                                                   before the operation that acks the entry)
--   'n', <stream idx>, <id>, <cancel key idx>, <cancels idx>, <job id>
--                                                   a cancel carried out: DEL P:cancel:<id>, ZREM
--                                                   P:cancels <id> (no ack; before the acking op)
--   'c', <stream idx>, <id>, <chord idx>, <member index>, <'1' ok | '0' failed>, <value JSON | failure JSON>
--                                                   record a group/chord member's outcome (no ack;
--                                                   before the acking op): the first record of a
--                                                   member decrements 'left'; the one that reaches 0
--                                                   enqueues the callback (or dead-letters it), once
--   'g', <stream idx>, <id>, <chord idx>, <11 header values as group.lua>, <m>,
--        then m members: <stream idx>, <n>, f1 .. fn
--                                                   ack, then write a group/chord and its members
--                                                   (a group id that exists is left as it is)
-- Returns: {skipped, refused}
--   skipped: the number of side-effect operations skipped because the entry
--   was no longer pending for this consumer (another worker reclaimed it: that
--   worker now owns the job's outcome, so writing ours would duplicate work);
--   refused: a flat array {op, stream idx, id, error, ...} of operations whose
--   side effect Redis refused (WRONGTYPE, an invalid expire time, ...). A
--   refused 'x', 'z', 'd' or 'r' does not ack its entry (its outcome is not
--   committed: the master decides what to commit instead); a refused 's', 'h'
--   or 'k' record leaves the ack to go ahead. None holds the others back:
--   every other operation of the batch is applied.
local group, consumer, delete = ARGV[1], ARGV[2], ARGV[3] == '1'
local skipped = 0
local refused = {}

-- a side effect, applied or refused (never raising: one bad outcome must not stop the batch)
local function try(op, sidx, id, ...)
  local res = redis.pcall(...)
  if type(res) == 'table' and res.err then
    refused[#refused + 1] = op
    refused[#refused + 1] = sidx
    refused[#refused + 1] = id
    refused[#refused + 1] = res.err
    return false
  end
  return true
end

-- The group may be gone (FLUSHALL, a failover that lost it): then nothing
-- is pending, side effects are skipped, and the entries still in the stream
-- are delivered again once fetch.lua recreates the group.
local function owned(stream, id)
  local p = redis.pcall('XPENDING', stream, group, id, id, 1)
  if p.err then return false end
  return p[1] ~= nil and p[1][2] == consumer
end

local function ack(stream, id)
  redis.pcall('XACK', stream, group, id)
  if delete then redis.pcall('XDEL', stream, id) end
end

-- the clock as epoch ms (text), for the rare writes that stamp it
local function _now()
  local t = redis.call('TIME')
  return string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- #include chord_done

local i = 4
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  local sidx = ARGV[i + 1]
  local stream = KEYS[tonumber(sidx)]
  if op == 'a' then
    local count = tonumber(ARGV[i + 2])
    local first, last = i + 3, i + 2 + count
    -- unpack in slices: Lua's C stack holds ~8000 values
    for s = first, last, 1000 do
      local e = math.min(s + 999, last)
      redis.pcall('XACK', stream, group, unpack(ARGV, s, e))
      if delete then redis.pcall('XDEL', stream, unpack(ARGV, s, e)) end
    end
    i = last + 1
  elseif op == 'k' then
    -- a record exists exactly for the entries this call acks. Fast path: one
    -- XPENDING over the batch's id range shows every id still pending, so the
    -- batch XACK acks them all. Otherwise (some already acked, by us earlier
    -- or by a worker that took them over) each id is acked on its own and
    -- recorded only if its XACK answered 1.
    local hist, maxlen, queue = KEYS[tonumber(ARGV[i + 2])], ARGV[i + 3], ARGV[i + 4]
    local count = tonumber(ARGV[i + 5])
    local first, last = i + 6, i + 5 + 6 * count
    local ids, want = {}, {}
    local lo, hi, lo_id, hi_id
    for j = first, last, 6 do
      local id = ARGV[j]
      ids[#ids + 1] = id
      want[id] = true
      local ms, sq = string.match(id, '^(%d+)-(%d+)$')
      local k = {tonumber(ms), tonumber(sq)}
      if lo == nil or k[1] < lo[1] or (k[1] == lo[1] and k[2] < lo[2]) then lo, lo_id = k, id end
      if hi == nil or k[1] > hi[1] or (k[1] == hi[1] and k[2] > hi[2]) then hi, hi_id = k, id end
    end
    local all = false
    local p = redis.pcall('XPENDING', stream, group, lo_id, hi_id, count)
    if type(p) == 'table' and not p.err and #p == count then
      all = true
      for _, e in ipairs(p) do
        if not want[e[1]] then all = false break end
      end
    end
    local function record(j)
      try(op, sidx, ARGV[j], 'XADD', hist, 'MAXLEN', '~', maxlen, '*', 'entryId', ARGV[j], 'jobId', ARGV[j + 1],
        'taskName', ARGV[j + 2], 'queue', queue, 'outcome', 'ok', 'attempt', ARGV[j + 3],
        'durationMs', ARGV[j + 4], 'finishedAt', ARGV[j + 5])
    end
    if all then
      for s = 1, #ids, 1000 do
        local e = math.min(s + 999, #ids)
        redis.pcall('XACK', stream, group, unpack(ids, s, e))
        if delete then redis.pcall('XDEL', stream, unpack(ids, s, e)) end
      end
      for j = first, last, 6 do record(j) end
    else
      for j = first, last, 6 do
        if redis.pcall('XACK', stream, group, ARGV[j]) == 1 then
          if delete then redis.pcall('XDEL', stream, ARGV[j]) end
          record(j)
        end
      end
    end
    i = last + 1
  else
    local id = ARGV[i + 2]
    local mine = owned(stream, id)
    if not mine then skipped = skipped + 1 end
    if op == 'x' then
      local nf = tonumber(ARGV[i + 4])
      if mine and try(op, sidx, id, 'XADD', KEYS[tonumber(ARGV[i + 3])], '*', unpack(ARGV, i + 5, i + 4 + nf)) then
        ack(stream, id)
      end
      i = i + 5 + nf
    elseif op == 'z' then
      if mine and try(op, sidx, id, 'ZADD', KEYS[1], ARGV[i + 3], ARGV[i + 4]) then
        ack(stream, id)
      end
      i = i + 5
    elseif op == 'd' then
      local nf = tonumber(ARGV[i + 5])
      if mine and try(op, sidx, id, 'XADD', KEYS[tonumber(ARGV[i + 3])], 'MAXLEN', '~', ARGV[i + 4], '*',
                      unpack(ARGV, i + 6, i + 5 + nf)) then
        ack(stream, id)
      end
      i = i + 6 + nf
    elseif op == 's' or op == 'h' then
      local nf = tonumber(ARGV[i + 5])
      if mine then
        local key = KEYS[tonumber(ARGV[i + 3])]
        if op == 's' then
          if try(op, sidx, id, 'HSET', key, unpack(ARGV, i + 6, i + 5 + nf)) then
            try(op, sidx, id, 'PEXPIRE', key, ARGV[i + 4])
          end
        else
          try(op, sidx, id, 'XADD', key, 'MAXLEN', '~', ARGV[i + 4], '*', unpack(ARGV, i + 6, i + 5 + nf))
        end
      else
        skipped = skipped - 1  -- counted once, with the operation that acks
      end
      i = i + 6 + nf
    elseif op == 'u' then
      if mine then
        try(op, sidx, id, 'DEL', KEYS[tonumber(ARGV[i + 3])])
      else
        skipped = skipped - 1  -- counted once, with the operation that acks
      end
      i = i + 4
    elseif op == 'n' then
      if mine then
        try(op, sidx, id, 'DEL', KEYS[tonumber(ARGV[i + 3])])
        try(op, sidx, id, 'ZREM', KEYS[tonumber(ARGV[i + 4])], ARGV[i + 5])
      else
        skipped = skipped - 1  -- counted once, with the operation that acks
      end
      i = i + 6
    elseif op == 'c' then
      if mine then
        local key = KEYS[tonumber(ARGV[i + 3])]
        local idx = ARGV[i + 4]
        -- a chord whose state expired records nothing (it would be a stray hash); a key of
        -- another type (a hostile chordId) is refused, never raised: the batch goes on
        local kind = redis.call('TYPE', key).ok
        if kind ~= 'hash' and kind ~= 'none' then
          try(op, sidx, id, 'HSETNX', key, 'r' .. idx, 'null')
        elseif kind == 'hash' then
          local ok = ARGV[i + 5] == '1'
          if redis.call('HSETNX', key, 'r' .. idx, ok and ARGV[i + 6] or 'null') == 1 then
            if not ok then
              redis.call('HSET', key, 'e' .. idx, ARGV[i + 6])
              redis.call('HINCRBY', key, 'failed', 1)
            end
            if redis.call('HINCRBY', key, 'left', -1) == 0 then chord_done(key, _now(), consumer,
              function(...) return try('c', sidx, id, ...) end) end
          end
        end
      else
        skipped = skipped - 1  -- counted once, with the operation that acks
      end
      i = i + 7
    elseif op == 'g' then
      local key = KEYS[tonumber(ARGV[i + 3])]
      local a = i + 4
      local m = tonumber(ARGV[a + 11])
      local j = a + 12
      local members = {}
      for _ = 1, m do
        local nf = tonumber(ARGV[j + 1])
        members[#members + 1] = {j, nf}
        j = j + 2 + nf
      end
      if mine then
        ack(stream, id)
        if redis.call('EXISTS', key) == 0 then
          redis.call('HSET', key, 'ttl', ARGV[a], 'total', ARGV[a + 1], 'left', ARGV[a + 1], 'failed', 0,
            'policy', ARGV[a + 2], 'cb', ARGV[a + 3], 'cbp', ARGV[a + 4], 'cbs', ARGV[a + 5], 'dlq', ARGV[a + 6],
            'id', ARGV[a + 7], 'ids', ARGV[a + 8], 'rk', ARGV[a + 9], 'rttl', ARGV[a + 10], 'state', 'running')
          redis.call('PEXPIRE', key, ARGV[a])
          if ARGV[a + 9] ~= '' then
            redis.call('DEL', ARGV[a + 9])
            redis.call('HSET', ARGV[a + 9], 'status', 'waiting')
            redis.call('PEXPIRE', ARGV[a + 9], ARGV[a + 10])
          end
          for _, mb in ipairs(members) do
            try(op, sidx, id, 'XADD', KEYS[tonumber(ARGV[mb[1]])], '*', unpack(ARGV, mb[1] + 2, mb[1] + 1 + mb[2]))
          end
        end
      end
      i = j
    elseif op == 'r' then
      local nf = tonumber(ARGV[i + 3])
      if mine and try(op, sidx, id, 'XADD', stream, '*', unpack(ARGV, i + 4, i + 3 + nf)) then
        ack(stream, id)
      end
      i = i + 4 + nf
    else
      return redis.error_reply('settle.lua: unknown operation ' .. tostring(op))
    end
  end
end
return {skipped, refused}
