"""Lua run inside Redis, so a guarded store and a batch of invalidations are one round trip each
and cannot interleave with each other."""

# KEYS: value, token[, member set]   ARGV: token seen before loading ('' if none), payload, ttl
# Stores only if no write advanced the token since the reader looked: a reader that loaded a row
# before a writer committed cannot put the old row back.
GUARDED_STORE = """
local current = redis.call('GET', KEYS[2]) or ''
if current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
if KEYS[3] then
  redis.call('SADD', KEYS[3], KEYS[1])
  -- the member set must outlive its longest-lived member, so its expiry only ever extends
  if redis.call('TTL', KEYS[3]) < tonumber(ARGV[3]) then
    redis.call('EXPIRE', KEYS[3], ARGV[3])
  end
end
return 1
"""

# KEYS: pairs of (token, target)   ARGV[1]: token ttl, ARGV[i+1]: 'k' (target is a value key) or
# 'g' (target is the member set of a group, whose every member is deleted).
# Returns the positions (1-based, among the pairs) of the value keys that held an entry, so the
# caller can refresh the entries that were in use.
INVALIDATE = """
local ttl = ARGV[1]
local dropped = {}
for i = 2, #ARGV do
  local token = KEYS[2 * i - 3]
  local target = KEYS[2 * i - 2]
  redis.call('INCR', token)
  redis.call('EXPIRE', token, ttl)
  if ARGV[i] == 'g' then
    local members = redis.call('SMEMBERS', target)
    for _, member in ipairs(members) do
      redis.call('DEL', member)
    end
    redis.call('DEL', target)
  elseif redis.call('DEL', target) == 1 then
    table.insert(dropped, i - 1)
  end
end
return dropped
"""
