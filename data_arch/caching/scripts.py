"""The Lua scripts the engine runs: each touches one hash slot (see :mod:`.keys`).

Generation counters and version records are seeded with the clock in microseconds when they
are missing, so a counter that expired (or was evicted) comes back larger than any value it had
before and no envelope recorded under the old one is ever served again. WAL positions are
16-digit upper-case hex, so comparing them as strings compares them as positions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Scripts"]

#: Namespace slot. KEYS: generation counters..., positions hash.
#: ARGV: seed, ttl (ms the counters must live at least), position fields...
#: Seeds missing counters, makes each outlive the value about to be computed under it, and
#: returns the counters and the asked-for positions (false where none).
GENERATIONS = """
local n = #KEYS - 1
local ttl = tonumber(ARGV[2])
local out = {}
for i = 1, n do
    if not redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ttl) then
        if redis.call('PTTL', KEYS[i]) < ttl then
            redis.call('PEXPIRE', KEYS[i], ttl)
        end
    end
    out[i] = redis.call('GET', KEYS[i])
end
if #ARGV > 2 then
    local positions = KEYS[n + 1]
    local found = redis.call('HMGET', positions, unpack(ARGV, 3))
    for i = 1, #found do
        out[n + i] = found[i]
    end
    local left = redis.call('PTTL', positions)
    if left ~= -2 and left < ttl then
        redis.call('PEXPIRE', positions, ttl)
    end
end
return out
"""

#: Namespace slot. KEYS: counters..., positions hash. ARGV: seed, ttl, L1 channel, message,
#: then field/position pairs. Increments the counters, keeps the highest position per field
#: (bumps from several processes may arrive out of order) and tells every L1.
BUMP = """
local n = #KEYS - 1
local out = {}
for i = 1, n do
    redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2])
    out[i] = redis.call('INCR', KEYS[i])
end
if #ARGV > 4 then
    local positions = KEYS[n + 1]
    for i = 5, #ARGV, 2 do
        local seen = redis.call('HGET', positions, ARGV[i])
        if not seen or seen < ARGV[i + 1] then
            redis.call('HSET', positions, ARGV[i], ARGV[i + 1])
        end
    end
    if redis.call('PTTL', positions) < tonumber(ARGV[2]) then
        redis.call('PEXPIRE', positions, ARGV[2])
    end
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return out
"""

#: Value slot. KEYS: value, lease, version, waiting. ARGV: token, px.
#: Takes the lease if free (else marks that someone waits, so the store wakes them) and
#: returns {acquired, current envelope, lease ms left, version record}.
LEASE = """
local acquired = 0
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
    acquired = 1
else
    redis.call('SET', KEYS[4], '1', 'PX', tonumber(ARGV[2]) * 2)
end
return {acquired, redis.call('GET', KEYS[1]) or false, redis.call('PTTL', KEYS[2]),
        redis.call('HGETALL', KEYS[3])}
"""

#: Value slot (plus, on a single Redis, the counters). KEYS: value, lease, version, waiting,
#: [counters...]. ARGV: envelope, px, token, version seen, ready channel, [counters seen...].
#: Stores only if the value was not invalidated since the load began (its version, its lease
#: -- an invalidation deletes it -- and, where the slot allows, its counters); always lets the
#: lease go and wakes the waiters.
STORE = """
local stored = 1
if (redis.call('HGET', KEYS[3], 'n') or '') ~= ARGV[4] then
    stored = 0
elseif ARGV[3] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[3] then
    stored = 0
else
    for i = 5, #KEYS do
        if redis.call('GET', KEYS[i]) ~= ARGV[i + 1] then
            stored = 0
            break
        end
    end
end
if stored == 1 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
    redis.call('DEL', KEYS[2])
end
if redis.call('DEL', KEYS[4]) == 1 then
    redis.call('PUBLISH', ARGV[5], KEYS[1])
end
return stored
"""

#: Value slot. KEYS: lease, waiting. ARGV: token, ready channel, value key.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
end
if redis.call('DEL', KEYS[2]) == 1 then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
"""

#: Value slot. KEYS: lease. ARGV: token, px. The heartbeat of a loader still working.
EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: Value slot. KEYS: value, lease, version, waiting. ARGV: seed, version ttl, ready channel,
#: L1 channel, message, then field/position pairs. Drops the value and the lease of an
#: in-flight load and moves the version on, so that load's result is refused; wakes waiters.
INVALIDATE = """
redis.call('DEL', KEYS[1], KEYS[2])
if redis.call('HSETNX', KEYS[3], 'n', ARGV[1]) == 0 then
    redis.call('HINCRBY', KEYS[3], 'n', 1)
end
for i = 6, #ARGV, 2 do
    local seen = redis.call('HGET', KEYS[3], ARGV[i])
    if not seen or seen < ARGV[i + 1] then
        redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    end
end
redis.call('PEXPIRE', KEYS[3], ARGV[2])
if redis.call('DEL', KEYS[4]) == 1 then
    redis.call('PUBLISH', ARGV[3], KEYS[1])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

_SOURCES = {
    "generations": GENERATIONS,
    "bump": BUMP,
    "lease": LEASE,
    "store": STORE,
    "release": RELEASE,
    "extend": EXTEND,
    "invalidate": INVALIDATE,
}


class Scripts:
    """The scripts registered on one client (``scripts.lease(keys=..., args=...)``)."""

    def __init__(self, client: Any) -> None:
        for name, source in _SOURCES.items():
            setattr(self, name, client.register_script(source))
