"""The limiter's Lua scripts: each runs atomically in Redis on the keys of ONE limit (one hash tag, so Redis
Cluster can serve them later), with Redis's own clock (`TIME`), so workers' clocks never disagree.

Keys of a limit NAME (`{<prefix>:limit:NAME}` is the hash tag):

- `...:state` a hash:
  - `tat`: requests, GCRA: the theoretical arrival time of the next request. A request may leave at
    `max(now, tat - tolerance)`; leaving moves `tat` on by one interval;
  - `level` at time `ts`: tokens, a bucket refilled at the token rate up to its capacity. A call reserves its
    expected tokens (the level may go below zero: later calls queue behind it) and settles with what it really
    used (a refund, or a further charge);
  - counters: `granted`, `throttled`, `rejected_429`, `last_429`; use in the current window: `w` (the window's
    number), `r` (requests), `t` (tokens).
- `...:conc`  concurrency: a sorted set of holders scored by expiry; a holder that is not refreshed (its worker
              died) stops counting when its expiry passes.
- `...:wait`  steps waiting for the limit, scored by their expected slot (for `agentrt limits`, and to spread
              the wake-ups of steps that wait longer than the horizon). The state's `tail0`..`tail2` remember
              the last expected slot given to a waiter of each priority (0 high, 1 normal, 2 low): a new waiter
              queues behind the waiters of its own and higher priorities only, so higher priorities go first.
              Within the horizon slots are reserved first come, first served: lower priorities are delayed,
              never starved.

A limit's fixed parameters travel as one argument (`PARAMS`, space-separated numbers), and `ACQUIRE` answers with
one string (`ok|wait|busy <seconds> <held> <credits>`): less to encode and parse on every call.

A bucket found missing (a first deploy, a flush, a Redis restart without persistence) starts EMPTY: one
request may leave at once, then the rate applies; the token bucket starts at zero. So a Redis that lost its
data never lets a burst through to a provider whose own bucket is already drained.

Numbers cross the script boundary as strings (Lua numbers would come back truncated to integers).
"""

from __future__ import annotations

PARAMS = ("interval", "tolerance", "token_rate", "token_capacity", "concurrency", "hold_ttl", "horizon", "go_now",
          "period")
"""The order of the numbers in a script's first argument."""

_HEAD = """
local p = {}
for v in string.gmatch(ARGV[1], '%S+') do p[#p + 1] = tonumber(v) end
local interval, tolerance, rate, cap, cmax = p[1], p[2], p[3], p[4], p[5]
local hold_ttl, horizon, go_now, period = p[6], p[7], p[8], p[9]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function window(field, amount)
  local w = tostring(math.floor(now / period))
  if redis.call('HGET', KEYS[1], 'w') ~= w then redis.call('HSET', KEYS[1], 'w', w, 'r', 0, 't', 0) end
  redis.call('HINCRBY', KEYS[1], field, amount)
end
"""

# KEYS: state conc wait; ARGV: params cost holder waiter not_before rate_done want priority
ACQUIRE = _HEAD + """
local cost, holder, waiter = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local not_before, rate_done, want = tonumber(ARGV[5]), ARGV[6] == '1', tonumber(ARGV[7])
local prio = math.max(0, math.min(2, tonumber(ARGV[8]) or 1))
local slot = now + not_before
local tat, level = nil, nil
if not rate_done then
  local st = redis.call('HMGET', KEYS[1], 'tat', 'level', 'ts')
  if interval > 0 then
    tat = tonumber(st[1]) or (now + tolerance)
    slot = math.max(slot, tat - tolerance)
  end
  if rate > 0 then
    level = tonumber(st[2]) or 0
    level = math.min(cap, level + math.max(0, now - (tonumber(st[3]) or now)) * rate)
    local need = math.min(cost, cap)
    if level < need then slot = math.max(slot, now + (need - level) / rate) end
  end
end
local wait = slot - now
local free = true
if cmax > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  free = redis.call('ZCARD', KEYS[2]) < cmax
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 60)
if wait > horizon then
  -- not reserved: the step waits elsewhere and asks again. Its expected slot queues behind the other steps
  -- waiting this long, so they do not all wake at once.
  local est = slot
  local mine = tonumber(redis.call('ZSCORE', KEYS[3], waiter))
  local tails = redis.call('HMGET', KEYS[1], 'tail0', 'tail1', 'tail2')
  if mine ~= nil then
    est = math.max(est, mine)
  else
    -- behind the waiters of its own and higher priorities (not behind lower ones)
    local spacing = math.max(interval, rate > 0 and cost / rate or 0)
    for q = 0, prio do
      local t = tonumber(tails[q + 1])
      if t ~= nil and t > now then est = math.max(est, t + spacing) end
    end
  end
  redis.call('HSET', KEYS[1], 'tail' .. prio, string.format('%.6f', math.max(est, tonumber(tails[prio + 1]) or 0)))
  redis.call('ZADD', KEYS[3], est, waiter)
  redis.call('HINCRBY', KEYS[1], 'throttled', 1)
  return 'wait ' .. string.format('%.6f', est - now) .. ' 0 0'
end
if (not free) and wait <= go_now then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  redis.call('ZADD', KEYS[3], now + 1, waiter)
  return 'busy ' .. string.format('%.6f', tonumber(first[2]) - now) .. ' 0 0'
end
-- credits: while the bucket stays more than half full, the worker may take `want` more slots at once and hand
-- them out without asking (a limit with room costs no round trip per call)
local extra = 0
if want > 0 and cmax == 0 and wait <= 0 and not rate_done then
  extra = want
  if tat ~= nil then
    local burst = math.floor(tolerance / interval + 0.5) + 1
    local free_now = math.floor((now + tolerance - (math.max(tat, slot) + interval)) / interval) + 1
    extra = math.min(extra, math.max(0, free_now - math.ceil(burst / 2)))
  end
  if level ~= nil and cost > 0 then
    extra = math.min(extra, math.max(0, math.floor((level - cost - cap / 2) / cost)))
  end
end
if tat ~= nil then
  redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', math.max(tat, slot) + interval * (1 + extra)))
end
if level ~= nil then
  redis.call('HSET', KEYS[1], 'level', string.format('%.3f', level - cost * (1 + extra)), 'ts',
             string.format('%.6f', now))
end
local held = '0'
if cmax > 0 and wait <= go_now then
  redis.call('ZADD', KEYS[2], now + hold_ttl, holder)
  held = '1'
end
if not rate_done then
  redis.call('HINCRBY', KEYS[1], 'granted', 1 + extra)
  window('r', 1 + extra)
end
if wait > go_now then
  redis.call('ZADD', KEYS[3], slot, waiter)
  redis.call('HINCRBY', KEYS[1], 'throttled', 1)
elseif waiter ~= '' then
  redis.call('ZREM', KEYS[3], waiter)
end
return 'ok ' .. string.format('%.6f', wait) .. ' ' .. held .. ' ' .. extra
"""

# KEYS: state conc
# ARGV: params holder refund_requests token_delta used_tokens remaining_requests remaining_tokens block is_429
SETTLE = _HEAD + """
local holder, refund = ARGV[2], tonumber(ARGV[3])
local delta, used = tonumber(ARGV[4]), tonumber(ARGV[5])
local rem_req, rem_tok, block = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
if holder ~= '' then redis.call('ZREM', KEYS[2], holder) end
local st = redis.call('HMGET', KEYS[1], 'tat', 'level', 'ts')
if interval > 0 and (refund > 0 or rem_req >= 0 or block > 0) then
  local tat = tonumber(st[1]) or (now + tolerance)
  if refund > 0 and tat > now then tat = math.max(now, tat - interval * refund) end
  -- the provider knows better: no more than `rem_req` may leave now
  if rem_req >= 0 then tat = math.max(tat, now + tolerance + interval - rem_req * interval) end
  if block > 0 then tat = math.max(tat, now + block + tolerance) end
  redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', tat))
end
if rate > 0 and (delta ~= 0 or rem_tok >= 0 or block > 0) then
  local level = tonumber(st[2]) or 0
  level = math.min(cap, level + math.max(0, now - (tonumber(st[3]) or now)) * rate)
  level = math.min(cap, level + delta)
  if rem_tok >= 0 then level = math.min(level, rem_tok) end
  if block > 0 then level = math.min(level, -rate * block) end
  redis.call('HSET', KEYS[1], 'level', string.format('%.3f', level), 'ts', string.format('%.6f', now))
end
if refund > 0 then  -- not let through after all: not counted
  redis.call('HINCRBY', KEYS[1], 'granted', -refund)
  if redis.call('HGET', KEYS[1], 'w') == tostring(math.floor(now / period)) then
    redis.call('HINCRBY', KEYS[1], 'r', -refund)
  end
end
if ARGV[9] == '1' then
  redis.call('HINCRBY', KEYS[1], 'rejected_429', 1)
  redis.call('HSET', KEYS[1], 'last_429', string.format('%.6f', now))
end
if used > 0 then window('t', math.floor(used)) end
return 1
"""

# KEYS: conc; ARGV: holder hold_ttl
REFRESH = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
"""

# KEYS: state; ARGV: params hold. After an outage: whatever Redis remembers, start from empty, and let nothing
# new go for `hold` seconds (the slots workers reserved on their own meanwhile go first).
DRAIN = _HEAD + """
local hold = tonumber(ARGV[2])
local st = redis.call('HMGET', KEYS[1], 'tat', 'level')
if interval > 0 then
  local tat = tonumber(st[1]) or 0
  redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', math.max(tat, now + hold + tolerance)))
end
if rate > 0 then
  local level = math.min(tonumber(st[2]) or 0, -rate * hold)
  redis.call('HSET', KEYS[1], 'level', string.format('%.3f', level), 'ts', string.format('%.6f', now))
end
return 1
"""

# KEYS: state conc wait. Read only: the state as of Redis's clock.
STATUS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local st = redis.call('HMGET', KEYS[1], 'tat', 'level', 'ts', 'w', 'r', 't', 'granted', 'throttled',
                      'rejected_429', 'last_429')
local out = {string.format('%.6f', now), tostring(redis.call('ZCOUNT', KEYS[2], now, '+inf')),
             tostring(redis.call('ZCOUNT', KEYS[3], now, '+inf'))}
for i = 1, 10 do out[#out + 1] = st[i] or '' end
return out
"""
