"""Rate limits in Redis: one Lua script checks and counts a whole batch atomically.

Each check is a list of counters (key, limit, ttl). A check passes when every
counter is below its limit; then all its counters are incremented. Because the
script runs atomically, two workers racing on one user never exceed a limit.
The script is sent with EVAL inside the batch's pipeline (Redis caches it by
hash), so it costs no extra round trip.
"""
from __future__ import annotations

from redis.asyncio.client import Pipeline

from streams.stages.route.limits import Counter, script_args

# ARGV: n_checks, then per check: n_counters, then per counter: key index (into KEYS), limit, ttl.
# Returns per check 0 (allowed and counted) or the 1-based position of the first full counter.
LUA = """
local out = {}
local i = 2
for c = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[i]); i = i + 1
  local denied = 0
  for j = 0, n - 1 do
    local p = i + 3 * j
    local cur = tonumber(redis.call('GET', KEYS[tonumber(ARGV[p])]) or '0')
    if denied == 0 and cur >= tonumber(ARGV[p + 1]) then denied = j + 1 end
  end
  if denied == 0 then
    for j = 0, n - 1 do
      local p = i + 3 * j
      local key = KEYS[tonumber(ARGV[p])]
      if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, tonumber(ARGV[p + 2])) end
    end
  end
  out[c] = denied
  i = i + 3 * n
end
return out
"""


def queue_checks(pipe: Pipeline, checks: list[list[Counter]]) -> bool:
    """Queue the script for ``checks`` on ``pipe``; False (nothing queued) when there is nothing to check."""
    if not checks:
        return False
    keys, argv = script_args(checks)
    pipe.eval(LUA, len(keys), *keys, *argv)
    return True
