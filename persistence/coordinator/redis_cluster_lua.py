"""The presence scripts of the Redis coordinator on Redis Cluster: each stays in one slot.

On a single server, presence scripts reach from a document's keys to the keys of the nodes
that have entries in it (``node:{nodeId}``, the node's document index) and back
(:mod:`persistence.coordinator.redis_lua`). Redis Cluster refuses a script touching keys of
two slots, so on a cluster a document knows by itself which of its entries are alive:

* ``collab:{D}:nodes`` (in the document's slot, beside ``:users`` and ``:cursors``) maps each
  node with entries in the document to the time (ms, the Redis server's clock) until which
  those entries are alive. A join sets it, a heartbeat extends it, a read drops the entries
  of the nodes whose time has passed (and their orphaned cursors);
* ``node:{N}`` and ``node:{N}:documents`` share the node's hash tag: the node's liveness and
  the index of the documents its heartbeat must extend, one script in the node's slot.

A join, a leave or a heartbeat is then one script in the node's slot and one per document,
each atomic; the adapter orders them (:mod:`persistence.coordinator.redis_cluster_presence`).
"""

from __future__ import annotations

from typing import Final

_HELPERS: Final = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function of_node(field, node) return string.sub(field, 1, #node + 1) == node .. ':' end

local function extend(key, ttl)
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < ttl) then redis.call('PEXPIRE', key, ttl) end
end

local function lapsed(nodes, node, now)
  return tonumber(redis.call('HGET', nodes, node) or '0') <= now
end

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

-- Remove every entry of `node` from the document and forget its time; how many.
local function remove_node(users, cursors, nodes, node)
  local removed = 0
  for _, field in ipairs(redis.call('HKEYS', users)) do
    if of_node(field, node) then removed = removed + redis.call('HDEL', users, field) end
  end
  redis.call('HDEL', nodes, node)
  drop_orphan_cursors(users, cursors)
  return removed
end

local function has_entries(users, node)
  for _, field in ipairs(redis.call('HKEYS', users)) do
    if of_node(field, node) then return true end
  end
  return false
end

-- Drop the entries of every node whose time has passed.
local function drop_lapsed(users, cursors, nodes, now)
  local alive = {}
  local changed = false
  for _, field in ipairs(redis.call('HKEYS', users)) do
    local node = string.match(field, '^([^:]*):') or ''
    if alive[node] == nil then alive[node] = not lapsed(nodes, node, now) end
    if not alive[node] then
      redis.call('HDEL', users, field)
      changed = true
    end
  end
  for node, live in pairs(alive) do
    if not live then redis.call('HDEL', nodes, node) end
  end
  if changed then drop_orphan_cursors(users, cursors) end
end
"""

# KEYS: users, cursors, nodes. ARGV: node, connection, entry JSON, ttl ms.
# A node whose time in this document has passed first loses its stale entries here.
DOC_JOIN: Final = (
    _HELPERS
    + r"""
local users, cursors, nodes = KEYS[1], KEYS[2], KEYS[3]
local node, ttl = ARGV[1], tonumber(ARGV[4])
local now = now_ms()
if lapsed(nodes, node, now) then remove_node(users, cursors, nodes, node) end
redis.call('HSET', users, node .. ':' .. ARGV[2], ARGV[3])
if tonumber(redis.call('HGET', nodes, node) or '0') < now + ttl then
  redis.call('HSET', nodes, node, now + ttl)
end
extend(users, ttl)
extend(cursors, ttl)
extend(nodes, ttl)
drop_orphan_cursors(users, cursors)
return 1
"""
)

# KEYS: users, cursors, nodes. ARGV: node, connection.
# Returns {removed, 1 if the node still has entries here}.
DOC_LEAVE: Final = (
    _HELPERS
    + r"""
local users, cursors, nodes, node = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local removed = redis.call('HDEL', users, node .. ':' .. ARGV[2])
local left = has_entries(users, node)
if not left then redis.call('HDEL', nodes, node) end
drop_orphan_cursors(users, cursors)
return {removed, left and 1 or 0}
"""
)

# The heartbeat in one document. KEYS: users, cursors, nodes. ARGV: node, ttl ms.
# Returns 1 if the node's entries here are alive (and now extended), 0 if it has none left
# (they lapsed: gone; the document can leave the node's index).
DOC_REFRESH: Final = (
    _HELPERS
    + r"""
local users, cursors, nodes, node = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local ttl = tonumber(ARGV[2])
local now = now_ms()
if lapsed(nodes, node, now) then
  remove_node(users, cursors, nodes, node)
  return 0
end
if not has_entries(users, node) then
  redis.call('HDEL', nodes, node)
  return 0
end
if tonumber(redis.call('HGET', nodes, node)) < now + ttl then
  redis.call('HSET', nodes, node, now + ttl)
end
extend(users, ttl)
extend(cursors, ttl)
extend(nodes, ttl)
return 1
"""
)

# KEYS: users, cursors, nodes. ARGV: node. Returns how many entries were removed.
DOC_DROP: Final = (
    _HELPERS
    + r"""
return remove_node(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
"""
)

# Drops the entries of lapsed nodes and the orphaned cursors, then reads.
# KEYS: users, cursors, nodes. ARGV: what ('users', 'cursors' or 'cursor'), cursor field.
DOC_READ: Final = (
    _HELPERS
    + r"""
local users, cursors, nodes = KEYS[1], KEYS[2], KEYS[3]
drop_lapsed(users, cursors, nodes, now_ms())
if ARGV[1] == 'users' then return redis.call('HGETALL', users) end
if ARGV[1] == 'cursors' then return redis.call('HGETALL', cursors) end
return redis.call('HGET', cursors, ARGV[2])
"""
)

# Stores a cursor if the user has a live entry in that section.
# KEYS: users, cursors, nodes. ARGV: section, user, cursor JSON.
DOC_CURSOR_SET: Final = (
    _HELPERS
    + r"""
local users, cursors, nodes = KEYS[1], KEYS[2], KEYS[3]
local now = now_ms()
local present = false
for _, raw in ipairs(redis.call('HVALS', users)) do
  local entry = cjson.decode(raw)
  if entry.section == ARGV[1] and entry.user == ARGV[2]
      and not lapsed(nodes, entry.node, now) then
    present = true
    break
  end
end
if not present then return 0 end
redis.call('HSET', cursors, ARGV[1] .. ':' .. ARGV[2], ARGV[3])
local left = redis.call('PTTL', users)
if left > 0 then extend(cursors, left) end
return 1
"""
)

# The node's side of a join or heartbeat. KEYS: node, index. ARGV: now (float, as text),
# ttl ms, index ttl ms, document id ('' for a heartbeat).
# Returns {1 if the node was alive, the documents of the index (empty if it was not)}.
NODE_ALIVE: Final = r"""
local alive = redis.call('EXISTS', KEYS[1])
if alive == 0 then redis.call('DEL', KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[4] ~= '' then redis.call('SADD', KEYS[2], ARGV[4]) end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
if alive == 0 then return {0, {}} end
return {1, redis.call('SMEMBERS', KEYS[2])}
"""

# KEYS: node, index. Forgets the node; returns the documents of its index.
NODE_DROP: Final = r"""
local documents = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2])
return documents
"""
