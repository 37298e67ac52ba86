"""Lua run inside Redis, so each of these is one round trip and cannot interleave with another."""

# KEYS: value, marker, scope token...   ARGV: payload, ttl, marker seen, token seen...
# Stores only if the generation's marker and every scope token are still the ones the reader
# saw before loading: a reader that loaded a row before a writer committed cannot put the old
# row back, and nothing is stored on a server that lost (or never had) the marker.
GUARDED_STORE = """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return 0
end
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[i + 1] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# KEYS: scope token...   ARGV: ttl, a fresh value per token
# The tokens, each created with its fresh value when missing: a reader that found a token
# missing (never set, evicted, expired, flushed) takes one before it loads, so that a write
# after its load is seen as a change.
ENSURE_TOKENS = """
local tokens = {}
for i = 1, #KEYS do
  local token = redis.call('GET', KEYS[i])
  if not token then
    token = ARGV[i + 1]
    redis.call('SET', KEYS[i], token, 'EX', ARGV[1])
  end
  tokens[i] = token
end
return tokens
"""

# KEYS: scope token...   ARGV: ttl, a fresh value per token
# Invalidation: every entry stored under an older token of these scopes is stale from now on.
REPLACE_TOKENS = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""
