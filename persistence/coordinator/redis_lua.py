"""The Lua scripts of :mod:`persistence.coordinator.redis`: the operations that must be atomic.

A script runs alone on the Redis server, so each of these is one atomic step for every
client of every node. The key layout they rely on is in ``docs/redis.md``; the prefix of
the adapter (``ARGV[1]`` where a script builds keys) comes first in every key. Scripts
that build keys of other families from their arguments (the presence ones) need a standalone
Redis or a primary with replicas; on Redis Cluster the adapter uses the per-slot presence
scripts of :mod:`persistence.coordinator.redis_cluster_lua` instead (``held`` builds only
keys of its own document's hash tag, so it runs on both).

Presence entries are the hash fields ``{nodeId}:{connectionId}`` of ``collab:{D}:users``
holding JSON ``{"section", "user", "node", "connection", "joined_at"}`` (section ``""`` for
the outline room); cursors are the fields ``{section}:{userId}`` of ``collab:{D}:cursors``.
A node is alive while ``node:{nodeId}`` exists; ``node:{nodeId}:documents`` indexes the
documents it has entries in.
"""

from __future__ import annotations

from typing import Final

_HELPERS: Final = r"""
local function users_key(prefix, doc) return prefix .. 'collab:' .. doc .. ':users' end
local function cursors_key(prefix, doc) return prefix .. 'collab:' .. doc .. ':cursors' end
local function node_key(prefix, node) return prefix .. 'node:' .. node end
local function index_key(prefix, node) return prefix .. 'node:' .. node .. ':documents' end
local function of_node(field, node) return string.sub(field, 1, #node + 1) == node .. ':' end

-- Give `key` at least `ttl` ms more to live (never shortens a longer TTL).
local function extend(key, ttl)
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < ttl) then redis.call('PEXPIRE', key, ttl) end
end

-- Drop the cursors whose (section, user) has no presence entry left.
local function drop_orphan_cursors(users, cursors)
  if redis.call('EXISTS', cursors) == 0 then return end
  local present = {}
  for _, raw in ipairs(redis.call('HVALS', users)) do
    local entry = cjson.decode(raw)
    present[entry.section .. ':' .. entry.user] = true
  end
  for _, field in ipairs(redis.call('HKEYS', cursors)) do
    if not present[field] then redis.call('HDEL', cursors, field) end
  end
end

-- Remove every entry of `node` from the documents its index names; how many.
local function remove_node(prefix, node)
  local removed = 0
  local index = index_key(prefix, node)
  for _, doc in ipairs(redis.call('SMEMBERS', index)) do
    local users = users_key(prefix, doc)
    for _, field in ipairs(redis.call('HKEYS', users)) do
      if of_node(field, node) then
        removed = removed + redis.call('HDEL', users, field)
      end
    end
    drop_orphan_cursors(users, cursors_key(prefix, doc))
  end
  redis.call('DEL', index)
  return removed
end

-- Mark `node` alive for `ttl` ms. A node whose liveness had lapsed first loses its stale
-- entries (it must join again). 1 if it was alive.
local function revive(prefix, node, now, ttl)
  local alive = redis.call('EXISTS', node_key(prefix, node))
  if alive == 0 then remove_node(prefix, node) end
  redis.call('SET', node_key(prefix, node), now, 'PX', ttl)
  return alive
end
"""

# KEYS: users, cursors. ARGV: prefix, node, connection, entry JSON, now, ttl ms,
# index ttl ms, document id.
PRESENCE_JOIN: Final = (
    _HELPERS
    + r"""
local users, cursors = KEYS[1], KEYS[2]
local prefix, node, ttl = ARGV[1], ARGV[2], tonumber(ARGV[6])
revive(prefix, node, ARGV[5], ttl)
redis.call('HSET', users, node .. ':' .. ARGV[3], ARGV[4])
local index = index_key(prefix, node)
redis.call('SADD', index, ARGV[8])
redis.call('PEXPIRE', index, ARGV[7])
extend(users, ttl)
extend(cursors, ttl)
drop_orphan_cursors(users, cursors)
return 1
"""
)

# KEYS: users, cursors. ARGV: prefix, node, connection, document id.
PRESENCE_LEAVE: Final = (
    _HELPERS
    + r"""
local users, cursors = KEYS[1], KEYS[2]
local prefix, node = ARGV[1], ARGV[2]
local removed = redis.call('HDEL', users, node .. ':' .. ARGV[3])
local still_there = false
for _, field in ipairs(redis.call('HKEYS', users)) do
  if of_node(field, node) then still_there = true break end
end
if not still_there then redis.call('SREM', index_key(prefix, node), ARGV[4]) end
drop_orphan_cursors(users, cursors)
return removed
"""
)

# ARGV: prefix, node, now, ttl ms, index ttl ms. Returns 1 if the node was alive.
PRESENCE_HEARTBEAT: Final = (
    _HELPERS
    + r"""
local prefix, node, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4])
local alive = revive(prefix, node, ARGV[3], ttl)
local index = index_key(prefix, node)
if redis.call('EXISTS', index) == 1 then
  redis.call('PEXPIRE', index, ARGV[5])
  for _, doc in ipairs(redis.call('SMEMBERS', index)) do
    extend(users_key(prefix, doc), ttl)
    extend(cursors_key(prefix, doc), ttl)
  end
end
return alive
"""
)

# ARGV: prefix, node. Returns how many entries were removed.
PRESENCE_DROP_NODE: Final = (
    _HELPERS
    + r"""
local removed = remove_node(ARGV[1], ARGV[2])
redis.call('DEL', node_key(ARGV[1], ARGV[2]))
return removed
"""
)

# Drops the entries of dead nodes and the orphaned cursors, then reads.
# KEYS: users, cursors. ARGV: prefix, what ('users', 'cursors' or 'cursor'), cursor field.
PRESENCE_READ: Final = (
    _HELPERS
    + r"""
local users, cursors, prefix = KEYS[1], KEYS[2], ARGV[1]
local flat = redis.call('HGETALL', users)
local alive = {}
for i = 1, #flat, 2 do
  local node = string.match(flat[i], '^([^:]*):') or ''
  if alive[node] == nil then
    alive[node] = redis.call('EXISTS', node_key(prefix, node)) == 1
  end
  if not alive[node] then redis.call('HDEL', users, flat[i]) end
end
drop_orphan_cursors(users, cursors)
if ARGV[2] == 'users' then return redis.call('HGETALL', users) end
if ARGV[2] == 'cursors' then return redis.call('HGETALL', cursors) end
return redis.call('HGET', cursors, ARGV[3])
"""
)

# Stores a cursor if the user has a live entry in that section.
# KEYS: users, cursors. ARGV: prefix, section, user, cursor JSON.
CURSOR_SET: Final = (
    _HELPERS
    + r"""
local users, cursors, prefix = KEYS[1], KEYS[2], ARGV[1]
local present = false
for _, raw in ipairs(redis.call('HVALS', users)) do
  local entry = cjson.decode(raw)
  if entry.section == ARGV[2] and entry.user == ARGV[3]
      and redis.call('EXISTS', node_key(prefix, entry.node)) == 1 then
    present = true
    break
  end
end
if not present then return 0 end
redis.call('HSET', cursors, ARGV[2] .. ':' .. ARGV[3], ARGV[4])
local left = redis.call('PTTL', users)
if left > 0 then extend(cursors, left) end
return 1
"""
)

_LOCK_HELPERS: Final = r"""
local function extend(key, ttl)
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < ttl) then redis.call('PEXPIRE', key, ttl) end
end
"""

# KEYS: lock, fence, index. ARGV: owner, ttl ms, now, section.
# Returns {token, acquired_at} or nil when another owner holds the lock.
LOCK_ACQUIRE: Final = (
    _LOCK_HELPERS
    + r"""
local holder = redis.call('HGET', KEYS[1], 'owner')
if holder and holder ~= ARGV[1] then return nil end
if not holder then
  local token = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token, 'acquired_at', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
extend(KEYS[3], tonumber(ARGV[2]))
return redis.call('HMGET', KEYS[1], 'token', 'acquired_at')
"""
)

# KEYS: lock, index. ARGV: owner, ttl ms. Returns {token, acquired_at} or nil.
LOCK_RENEW: Final = (
    _LOCK_HELPERS
    + r"""
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return nil end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
extend(KEYS[2], tonumber(ARGV[2]))
return redis.call('HMGET', KEYS[1], 'token', 'acquired_at')
"""
)

# Compare-and-delete. KEYS: lock, index. ARGV: owner, force ('1' or '0'), section.
LOCK_RELEASE: Final = r"""
local holder = redis.call('HGET', KEYS[1], 'owner')
if not holder then return 0 end
if holder ~= ARGV[1] and ARGV[2] ~= '1' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[3])
return 1
"""

# KEYS: lock. Returns {owner, token, acquired_at, pttl} or nil.
LOCK_GET: Final = r"""
local fields = redis.call('HMGET', KEYS[1], 'owner', 'token', 'acquired_at')
if not fields[1] then return nil end
return {fields[1], fields[2], fields[3], redis.call('PTTL', KEYS[1])}
"""

# The live locks of a document; drops index members whose lock is gone.
# KEYS: index. ARGV: the head of the document's lock keys (the index key and ':'; on a
# cluster the lock keys share the index's hash tag, so they are in its slot).
# Returns a flat list: section, owner, token, acquired_at, pttl, section, ...
LOCK_HELD: Final = r"""
local out = {}
for _, section in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. section
  local fields = redis.call('HMGET', key, 'owner', 'token', 'acquired_at')
  if fields[1] then
    table.insert(out, section)
    table.insert(out, fields[1])
    table.insert(out, fields[2])
    table.insert(out, fields[3])
    table.insert(out, redis.call('PTTL', key))
  else
    redis.call('SREM', KEYS[1], section)
  end
end
return out
"""

# Fixed window. KEYS: counter. ARGV: limit, window ms.
# Returns {allowed (1/0), remaining, retry_after ms}.
RATE_HIT: Final = r"""
local limit = tonumber(ARGV[1])
local raw = redis.call('GET', KEYS[1])
local count = tonumber(raw or '0')
if not count then return redis.error_reply('CORRUPT rate limit counter is not a number') end
if count >= limit then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    left = tonumber(ARGV[2])
  end
  return {0, 0, left}
end
if count == 0 then
  redis.call('SET', KEYS[1], 1, 'PX', ARGV[2])
else
  redis.call('INCR', KEYS[1])
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
end
return {1, limit - count - 1, 0}
"""

# KEYS: aggregate. ARGV: metric, amount, ttl ms. The TTL starts at the first write.
STATS_INCR: Final = r"""
local value = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return value
"""

# KEYS: queue. ARGV: notification JSON, max length. Returns the length after trimming.
NOTIFY_PUSH: Final = r"""
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
return redis.call('LLEN', KEYS[1])
"""

# The guarded append of a change stream. KEYS: stream, frozen flag. ARGV: section, update,
# origin. Returns the entry id, or false (nil) when the document is frozen: one atomic step,
# so no append lands after a freeze that returned.
JOURNAL_APPEND: Final = r"""
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
return redis.call('XADD', KEYS[1], '*', 'section', ARGV[1], 'update', ARGV[2], 'origin', ARGV[3])
"""
