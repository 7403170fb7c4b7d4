"""The Lua scripts: every state change of a group is one atomic script, run by EVALSHA.

Scripts receive key names through KEYS and names of topics, groups and consumers through ARGV;
their source is constant, so each is loaded once per server. The one exception to "keys only
through KEYS": publishing reads which groups are bound from the route hashes (that is what makes
a binding declared in another process visible at once) and writes to those groups' keys, and a
blocked receiver's box is named after its consumer id. All times come from the server's clock
(`TIME`), in milliseconds, so clients with skewed clocks agree on deadlines. The group scripts
see the group's keys as KEYS[1..7] in `keys.GROUP_SUFFIXES` order.

Each `redis.call` from Lua costs a few microseconds, so the scripts keep their calls few and
independent of how many messages they handle (one HMGET, not one HGET per message).

What the group keys hold (see also docs/backends/redis.md):
- ready: `<entry>:<deliveries so far>` items (just `<entry>` before the first delivery),
  oldest first;
- body: entry -> envelope;
- owner: entry -> `<consumer>:<delivery count>` while leased (the receipt an ack must match);
- timers: `d:<entry>:<count>` (delayed until), `l:<entry>` (lease deadline, with ack_timeout),
  `c:<consumer>` (alive until), all scored in ms;
- waiting: the receivers blocked in a receive (or, registered by ANSWERED, a server about to
  block after answering a request), in arrival order. Whatever makes messages ready
  (publish, nack, reaping) leases them to the first waiting receiver at once and pushes them,
  as entry / delivery count / envelope triples, to its box `<base>:box:<consumer>`, which that
  receiver is blocked on: a waiting receiver gets a message in the same round trip as the
  publish, with no second call to lease it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .keys import GROUP_SUFFIXES


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA1 (what EVALSHA names it by)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# -- building blocks (each script includes only the ones it uses) ----------------------------------
_NOW = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_SLICES = r"""
-- run `command key item...` over a long list in slices (Lua's unpack has a small limit)
local function each_slice(command, key, items)
  for i = 1, #items, 1000 do
    redis.call(command, key, unpack(items, i, math.min(i + 999, #items)))
  end
end
"""

# G(base): the keys of the group at `base`; K: the group of a group script (its KEYS[1..7])
_GROUP = (
    "local SUFFIXES = {"
    + ", ".join(f"'{s}'" for s in GROUP_SUFFIXES)
    + "}\n"
    + r"""
local function G(base)
  local keys = {base = base}
  for _, suffix in ipairs(SUFFIXES) do
    keys[suffix] = base .. ':' .. suffix
  end
  return keys
end
"""
)

_KEYS = (
    "local K = {base = string.sub(KEYS[1], 1, #KEYS[1] - #':ready'), "
    + ", ".join(f"{suffix} = KEYS[{i + 1}]" for i, suffix in enumerate(GROUP_SUFFIXES))
    + "}\n"
)

# lease ready messages to a consumer, and hand them to receivers blocked waiting for them
_LEASE = r"""
-- lease up to `wanted` ready messages of group `g` to `consumer`: returns a flat list of
-- entry, delivery count, envelope
local function lease(g, consumer, wanted, ack_timeout, now)
  local items = redis.call('LPOP', g.ready, wanted)
  if not items then
    return {}
  end
  local entries, counts = {}, {}
  for i, item in ipairs(items) do
    local colon = string.find(item, ':', 1, true)
    if colon then
      entries[i] = string.sub(item, 1, colon - 1)
      counts[i] = tonumber(string.sub(item, colon + 1)) + 1
    else
      entries[i] = item
      counts[i] = 1
    end
  end
  local bodies = redis.call('HMGET', g.body, unpack(entries))
  local leased, owners, deadlines = {}, {}, {}
  for i, entry in ipairs(entries) do
    if bodies[i] then
      owners[#owners + 1] = entry
      owners[#owners + 1] = consumer .. ':' .. counts[i]
      if ack_timeout > 0 then
        deadlines[#deadlines + 1] = now + ack_timeout
        deadlines[#deadlines + 1] = 'l:' .. entry
      end
      leased[#leased + 1] = entry
      leased[#leased + 1] = counts[i]
      leased[#leased + 1] = bodies[i]
    end
  end
  each_slice('HSET', g.owner, owners)
  each_slice('ZADD', g.timers, deadlines)
  return leased
end

-- serve blocked receivers of group `g` in turn while messages are ready: lease to each and put
-- the messages in its box, where its blocking pop receives them
local function dispatch(g, now)
  while redis.call('LLEN', g.ready) > 0 do
    local waiter = redis.call('LPOP', g.waiting)
    if not waiter then
      return
    end
    local consumer, wanted, ack_timeout, box_ttl =
      string.match(waiter, '^([^:]+):(%d+):(%d+):(%d+)$')
    local alive = redis.call('ZSCORE', g.timers, 'c:' .. consumer)
    if alive and tonumber(alive) >= now then  -- else it closed or died: forget it
      local leased = lease(g, consumer, tonumber(wanted), tonumber(ack_timeout), now)
      local box = g.base .. ':box:' .. consumer
      each_slice('RPUSH', box, leased)
      redis.call('PEXPIRE', box, tonumber(box_ttl))
    end
  end
end
"""

# ARGV pairs (entry, delivery count) from `first` on: the entries, and the owner value each
# must have for the lease to still be `consumer`'s
_RECEIPTS = r"""
local function receipts(consumer, first)
  local entries, expected = {}, {}
  for i = first, #ARGV, 2 do
    entries[#entries + 1] = ARGV[i]
    expected[#expected + 1] = consumer .. ':' .. ARGV[i + 1]
  end
  return entries, expected
end

-- which of `entries` are still leased as `expected`; returns those entries and their
-- `<entry>:<count>` ready items
local function still_held(entries, expected)
  local owners = redis.call('HMGET', K.owner, unpack(entries))
  local held, items = {}, {}
  for i, entry in ipairs(entries) do
    if owners[i] == expected[i] then
      held[#held + 1] = entry
      items[#items + 1] = entry .. string.sub(owners[i], string.find(owners[i], ':[^:]*$'))
    end
  end
  return held, items
end
"""

_REQUEUE = r"""
-- end the leases of `entries` (owner, deadline timer), leaving the messages in the group
local function unlease(entries)
  if #entries == 0 then
    return
  end
  each_slice('HDEL', K.owner, entries)
  local timers = {}
  for i, entry in ipairs(entries) do
    timers[i] = 'l:' .. entry
  end
  each_slice('ZREM', K.timers, timers)
end

-- put `<entry>:<count>` items back at the head of the ready list, lowest entry first, so a
-- single consumer sees them again in publish order; serve blocked receivers
local function requeue(items, now)
  if #items == 0 then
    return
  end
  table.sort(items, function(a, b)
    return tonumber(string.match(a, '^%d+')) > tonumber(string.match(b, '^%d+'))
  end)
  each_slice('LPUSH', K.ready, items)
  if redis.call('LLEN', K.waiting) > 0 then
    dispatch(K, now)
  end
end
"""

_REAP = r"""
-- move what is due back to ready: delayed messages, expired leases, leases of dead consumers
local function reap(now)
  local due = redis.call('ZRANGEBYSCORE', K.timers, '-inf', now, 'LIMIT', 0, 1000)
  if #due == 0 then
    return
  end
  redis.call('ZREM', K.timers, unpack(due))
  local ready, expired, dead = {}, {}, {}
  local any_dead = false
  for _, timer in ipairs(due) do
    local kind, rest = string.sub(timer, 1, 1), string.sub(timer, 3)
    if kind == 'd' then
      ready[#ready + 1] = rest
    elseif kind == 'l' then
      expired[#expired + 1] = rest
    else
      dead[rest] = true
      any_dead = true
      redis.call('DEL', K.base .. ':box:' .. rest)
    end
  end
  each_slice('RPUSH', K.ready, ready)
  local back, gone = {}, {}
  if #expired > 0 then
    local owners = redis.call('HMGET', K.owner, unpack(expired))
    for i, entry in ipairs(expired) do
      if owners[i] then
        gone[#gone + 1] = entry
        back[#back + 1] = entry .. string.sub(owners[i], string.find(owners[i], ':[^:]*$'))
      end
    end
  end
  if any_dead then
    local owners = redis.call('HGETALL', K.owner)
    for i = 1, #owners, 2 do
      local owner = owners[i + 1]
      local colon = string.find(owner, ':[^:]*$')
      if dead[string.sub(owner, 1, colon - 1)] then
        gone[#gone + 1] = owners[i]
        back[#back + 1] = owners[i] .. string.sub(owner, colon)
      end
    end
  end
  unlease(gone)
  requeue(back, now)
end
"""

_ACK = r"""
-- remove the messages of the ARGV receipt pairs from `first` on whose lease `consumer` still
-- holds (with_deadlines: their leases have deadline timers); returns how many
local function ack(consumer, first, with_deadlines)
  local held = still_held(receipts(consumer, first))
  if #held > 0 then
    redis.call('HDEL', K.owner, unpack(held))
    redis.call('HDEL', K.body, unpack(held))
    if with_deadlines then
      for i, entry in ipairs(held) do
        held[i] = 'l:' .. entry
      end
      redis.call('ZREM', K.timers, unpack(held))
    end
  end
  return #held
end
"""

_KEEP = r"""
-- an ephemeral group lives while its subscriber does: renew its keys' time to live
local function keep_ephemeral(keep_ms, alive_ms)
  if keep_ms > 0 then
    redis.call('SET', K.alive, keep_ms, 'PX', alive_ms)
    for i = 1, 6 do
      redis.call('PEXPIRE', KEYS[i], keep_ms)
    end
  end
end
"""

# AMQP topic matching, exactly as anyqueue.names.matches: `*` one word, `#` zero or more words,
# and a pattern reaches a dead-letter topic only if it ends in `.dead` itself.
_MATCHER = r"""
local function split_words(text)
  local words, start = {}, 1
  while true do
    local dot = string.find(text, '.', start, true)
    if not dot then
      words[#words + 1] = string.sub(text, start)
      return words
    end
    words[#words + 1] = string.sub(text, start, dot - 1)
    start = dot + 1
  end
end

local function is_dead(text)
  return #text >= 5 and string.sub(text, -5) == '.dead'
end

local function matches(pattern, topic)
  if is_dead(topic) and not is_dead(pattern) then
    return false
  end
  if not (string.find(pattern, '*', 1, true) or string.find(pattern, '#', 1, true)) then
    return pattern == topic
  end
  local p, w = split_words(pattern), split_words(topic)
  local pi, wi, star_p, star_w = 1, 1, 0, 1
  while wi <= #w do
    if pi <= #p and p[pi] == '#' then
      star_p, star_w = pi, wi
      pi = pi + 1
    elseif pi <= #p and (p[pi] == '*' or p[pi] == w[wi]) then
      pi, wi = pi + 1, wi + 1
    elseif star_p > 0 then
      star_w = star_w + 1
      wi, pi = star_w, star_p + 1
    else
      return false
    end
  end
  while pi <= #p and p[pi] == '#' do
    pi = pi + 1
  end
  return pi == #p + 1
end
"""

_SUFFIXES = "local SUFFIXES = {" + ", ".join(f"'{s}'" for s in GROUP_SUFFIXES) + "}\n"


# -- the scripts -----------------------------------------------------------------------------------
PUBLISH = Script(
    "publish",
    _NOW
    + _SLICES
    + _GROUP
    + _LEASE
    + _MATCHER
    + r"""
-- Append messages to every group bound to the topic, exactly or by pattern, in one step, and
-- hand them straight to receivers blocked waiting for them.
-- KEYS[1]: the topic's route hash (group base -> 'd' | 'e')
-- KEYS[2]: the pattern routes (group base -> 'd|<pattern>' | 'e|<pattern>')
-- ARGV[1]: the topic; ARGV[2..]: one envelope per message
-- Returns how many groups received the messages.
local topic = ARGV[1]
local count = #ARGV - 1
local targets = {}
local exact = redis.call('HGETALL', KEYS[1])
for i = 1, #exact, 2 do
  targets[#targets + 1] = {exact[i], exact[i + 1] == 'e', KEYS[1]}
end
local patterns = redis.call('HGETALL', KEYS[2])
for i = 1, #patterns, 2 do
  local route = patterns[i + 1]
  if matches(string.sub(route, 3), topic) then
    targets[#targets + 1] = {patterns[i], string.sub(route, 1, 1) == 'e', KEYS[2]}
  end
end
local now = nil
local reached = 0
for _, target in ipairs(targets) do
  local g, ephemeral, routes = G(target[1]), target[2], target[3]
  local keep = false
  if ephemeral then
    keep = redis.call('GET', g.alive)
    if not keep then
      -- its subscriber is gone: unbind the group and drop what is left of it
      redis.call('HDEL', routes, g.base)
      for _, suffix in ipairs(SUFFIXES) do
        redis.call('DEL', g[suffix])
      end
    end
  end
  if keep or not ephemeral then
    local first = redis.call('INCRBY', g.seq, count) - count
    local items, bodies = {}, {}
    for i = 1, count do
      local entry = first + i
      items[i] = entry  -- a ready item without `:<count>` has not been delivered yet
      bodies[2 * i - 1] = entry
      bodies[2 * i] = ARGV[i + 1]
    end
    each_slice('HSET', g.body, bodies)
    each_slice('RPUSH', g.ready, items)
    if redis.call('LLEN', g.waiting) > 0 then
      now = now or now_ms()
      dispatch(g, now)
    end
    if keep then
      for _, suffix in ipairs({'seq', 'body', 'ready', 'owner', 'timers'}) do
        redis.call('PEXPIRE', g[suffix], tonumber(keep))
      end
    end
    reached = reached + 1
  end
end
return reached
""",
)

ATTACH = Script(
    "attach",
    _NOW
    + r"""
-- Bind a group to its topic or pattern (declare), and optionally register a consumer.
-- KEYS: route hash, catalog hash, the group's timers, the group's alive key
-- ARGV: group base, route value, catalog value ('' for none), consumer ('' for none),
--       alive_ms, keep_ms (0: a durable group)
local alive_ms, keep_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
if keep_ms > 0 then
  redis.call('SET', KEYS[4], keep_ms, 'PX', alive_ms)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], now_ms() + alive_ms, 'c:' .. ARGV[4])
  if keep_ms > 0 then
    redis.call('PEXPIRE', KEYS[3], keep_ms)
  end
end
return 1
""",
)

LEASE = Script(
    "lease",
    _NOW
    + _SLICES
    + _KEYS
    + _LEASE
    + _REQUEUE
    + _REAP
    + _KEEP
    + r"""
-- Lease up to ARGV[2] ready messages to a consumer, after reaping what is due; with none
-- ready, register the consumer as waiting (a publish then leases to it and fills its box).
-- KEYS[8]: the consumer's box
-- ARGV: consumer, max_messages, ack_timeout_ms (0: none), alive_ms, keep_ms (0: durable),
--       register ('1': wait if nothing is ready), the waiting entry of the last call ('' none)
-- Returns {0, entry, delivery_count, envelope, ...}; or, with nothing ready, {wait_ms, entry}
-- when registered as waiting, else {wait_ms} (wait_ms: until the next timer, -1 for none).
local consumer, wanted, ack_timeout = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local alive_ms, keep_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local box = KEYS[8]
local now = now_ms()
reap(now)
redis.call('ZADD', K.timers, 'GT', now + alive_ms, 'c:' .. consumer)
keep_ephemeral(keep_ms, alive_ms)
if ARGV[7] ~= '' then
  -- its last wait ended empty-handed: it waits no more, and takes what was leased to it since
  redis.call('LREM', K.waiting, 1, ARGV[7])
  local boxed = redis.call('LRANGE', box, 0, -1)
  if #boxed > 0 then
    redis.call('DEL', box)
    table.insert(boxed, 1, 0)
    return boxed
  end
end
local leased = lease(K, consumer, wanted, ack_timeout, now)
if keep_ms > 0 then
  redis.call('PEXPIRE', K.owner, keep_ms)
  redis.call('PEXPIRE', K.timers, keep_ms)
end
if #leased > 0 then
  if #leased == 3 * wanted and redis.call('LLEN', K.waiting) > 0 then
    dispatch(K, now)  -- more may be ready: serve the receivers that wait
  end
  table.insert(leased, 1, 0)
  return leased
end
local wait = -1
local first = redis.call('ZRANGE', K.timers, 0, 0, 'WITHSCORES')
if first[2] then
  wait = math.max(0, tonumber(first[2]) - now)
end
if ARGV[6] == '1' then
  local entry = consumer .. ':' .. wanted .. ':' .. ack_timeout .. ':' .. (2 * alive_ms)
  redis.call('RPUSH', K.waiting, entry)
  return {wait, entry}
end
return {wait}
""",
)

ACK = Script(
    "ack",
    _KEYS
    + _RECEIPTS
    + _ACK
    + r"""
-- Remove messages whose lease the consumer still holds; stale receipts are ignored.
-- ARGV: consumer, with_deadlines ('1' if leases have deadline timers), then entry and
--       delivery count per message
return ack(ARGV[1], 3, ARGV[2] == '1')
""",
)

ANSWERED = Script(
    "answered",
    _NOW
    + _SLICES
    + _KEYS
    + _LEASE
    + _RECEIPTS
    + _ACK
    + _REQUEUE
    + _REAP
    + _KEEP
    + r"""
-- A server answered a request: its reply was pushed just before, on the same connection.
-- Ack the request and, if asked to, register the consumer as waiting for one message (the slot
-- the ack freed) - leased into its box at once if one is ready - so that the server's next
-- receive blocks on its box without a lease call, and the next request's publish leases
-- straight into it.
-- ARGV: consumer, ack_timeout_ms (0: none), alive_ms, keep_ms (0: durable), the waiting entry
--       to register ('' for none), the request's entry and delivery count
local consumer, ack_timeout = ARGV[1], tonumber(ARGV[2])
local alive_ms, keep_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
-- a write Redis refuses when out of memory comes first: if it refused the reply's push, it
-- refuses this too, and the request stays leased rather than acked unanswered
redis.call('ZADD', K.timers, 'GT', now + alive_ms, 'c:' .. consumer)
local acked = ack(consumer, 6, ack_timeout > 0)
reap(now)
keep_ephemeral(keep_ms, alive_ms)
if ARGV[5] ~= '' then
  redis.call('RPUSH', K.waiting, ARGV[5])
  if redis.call('LLEN', K.ready) > 0 then
    dispatch(K, now)
  end
end
return acked
""",
)

NACK = Script(
    "nack",
    _NOW
    + _SLICES
    + _KEYS
    + _LEASE
    + _RECEIPTS
    + _REQUEUE
    + _KEEP
    + r"""
-- Return messages whose lease the consumer holds: at once (head of the queue) or after a delay.
-- ARGV: consumer, delay_ms (-1: at once), keep_ms, alive_ms, then entry and count pairs
local held, items = still_held(receipts(ARGV[1], 5))
unlease(held)
local delay = tonumber(ARGV[2])
local now = now_ms()
if delay > 0 and #items > 0 then
  local due = now + delay
  local timers = {}
  for _, item in ipairs(items) do
    timers[#timers + 1] = due
    timers[#timers + 1] = 'd:' .. item
  end
  each_slice('ZADD', K.timers, timers)
else
  requeue(items, now)
end
keep_ephemeral(tonumber(ARGV[3]), tonumber(ARGV[4]))
return #held
""",
)

EXTEND = Script(
    "extend",
    _NOW
    + _KEYS
    + _RECEIPTS
    + r"""
-- Push the deadlines of leases the consumer holds ARGV[2] ms past now.
-- ARGV: consumer, ms, then entry and count pairs
local held = still_held(receipts(ARGV[1], 3))
local deadline = now_ms() + tonumber(ARGV[2])
for _, entry in ipairs(held) do
  redis.call('ZADD', K.timers, 'XX', deadline, 'l:' .. entry)
end
return #held
""",
)

RELEASE = Script(
    "release",
    _NOW
    + _SLICES
    + _KEYS
    + _LEASE
    + _REQUEUE
    + r"""
-- A consumer leaves (close, or a dropped connection): its leases go back to the group.
-- KEYS[8]: its box; KEYS[9]: the subscription's wake list; KEYS[10]: the group's route hash
-- ARGV: consumer, drop ('1': an ephemeral group, delete it), wake ('1': wake a receive
--       blocked on KEYS[9]), successor (a consumer id to register instead, or ''), alive_ms,
--       its waiting entry ('' for none)
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[10], K.base)
  redis.call('DEL', unpack(KEYS, 1, 8))
else
  local now = now_ms()
  if ARGV[6] ~= '' then
    redis.call('LREM', K.waiting, 1, ARGV[6])
  end
  redis.call('ZREM', K.timers, 'c:' .. ARGV[1])
  redis.call('DEL', KEYS[8])
  local owners = redis.call('HGETALL', K.owner)
  local held, items = {}, {}
  local mine = ARGV[1] .. ':'
  for i = 1, #owners, 2 do
    local owner = owners[i + 1]
    if string.sub(owner, 1, #mine) == mine then
      held[#held + 1] = owners[i]
      items[#items + 1] = owners[i] .. string.sub(owner, #mine)
    end
  end
  unlease(held)
  if ARGV[4] ~= '' then
    redis.call('ZADD', K.timers, now + tonumber(ARGV[5]), 'c:' .. ARGV[4])
  end
  requeue(items, now)
end
if ARGV[3] == '1' then
  redis.call('RPUSH', KEYS[9], 'closed')
  redis.call('PEXPIRE', KEYS[9], 60000)
end
return 1
""",
)

HEARTBEAT = Script(
    "heartbeat",
    _NOW
    + _KEYS
    + _KEEP
    + r"""
-- A consumer is still there: keep it (and an ephemeral group) alive.
-- KEYS[8]: the group's route hash
-- ARGV: consumer, alive_ms, keep_ms (0: durable), group base, route value
-- Returns 1 when an ephemeral group had lapsed and was bound again, else 0.
local alive_ms, keep_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZADD', K.timers, now_ms() + alive_ms, 'c:' .. ARGV[1])
if keep_ms > 0 then
  local lapsed = redis.call('EXISTS', K.alive) == 0
  keep_ephemeral(keep_ms, alive_ms)
  if lapsed then
    redis.call('HSET', KEYS[8], ARGV[4], ARGV[5])
    return 1
  end
end
return 0
""",
)

#: every script, loaded at connect (and again after a server forgot them)
ALL = (PUBLISH, ATTACH, LEASE, ACK, ANSWERED, NACK, EXTEND, RELEASE, HEARTBEAT)

#: for tests: evaluates the publish script's matcher on (pattern, topic) pairs of ARGV
MATCHER_PROBE = Script(
    "matcher-probe",
    _MATCHER
    + r"""
local results = {}
for i = 1, #ARGV, 2 do
  results[#results + 1] = matches(ARGV[i], ARGV[i + 1]) and 1 or 0
end
return results
""",
)
