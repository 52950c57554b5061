"""Rate limits in Redis: a Lua script checks and counts a batch's checks, each atomically.

Each check is a list of counters (key, limit, ttl). A check passes when every
counter is below its limit; then all its counters are incremented. Because the
script runs atomically, two workers racing on one user never exceed a limit.
The script is sent with EVAL inside the batch's pipeline (Redis caches it by
hash), so it costs no extra round trip; a large batch sends it in pieces
(``streams.stores.batch.SCRIPT_PIECE`` checks each), run in order.
"""
from __future__ import annotations

from typing import Protocol

from redis.asyncio.client import Pipeline

from infra.settings import Settings
from streams.stages.route.limits import Counter, denied_by, script_args
from streams.stores.batch import RedisBatch, Reply, memory_of, pieces, pipeline_of

# ARGV[1]: comma-separated numbers (one argument, not thousands: each argument costs the client its own packing):
# n_checks, then per check: n_counters, then per counter: key index (into KEYS), limit, ttl;
# optionally followed, per check, by a decision key index (0: none) and its ttl.
# Returns per check 0 (allowed and counted) or the 1-based position of the first full counter, comma-separated in
# one string: redis-py reads an array reply element by element in Python, a line each.
# A check whose decision key exists returns the stored decision without counting again: a batch that is
# retried (an outage, a record split out) never counts one (event, channel) twice.
LUA = """
local A = {}
for v in string.gmatch(ARGV[1], '[^,]+') do A[#A + 1] = v end
local n = tonumber(A[1])
local starts = {}
local i = 2
for c = 1, n do starts[c] = i; i = i + 1 + 3 * tonumber(A[i]) end
local marked = #A >= i + 2 * n - 1
local out = {}
for c = 1, n do
  local mkey = nil
  if marked then
    local mi = tonumber(A[i + 2 * (c - 1)])
    if mi > 0 then mkey = KEYS[mi] end
  end
  local seen = false
  if mkey then seen = redis.call('GET', mkey) end
  if seen then
    out[c] = tonumber(seen)
  else
    local p0 = starts[c]
    local cnt = tonumber(A[p0])
    local denied = 0
    for j = 0, cnt - 1 do
      local p = p0 + 1 + 3 * j
      local cur = tonumber(redis.call('GET', KEYS[tonumber(A[p])]) or '0')
      if denied == 0 and cur >= tonumber(A[p + 1]) then denied = j + 1 end
    end
    if denied == 0 then
      for j = 0, cnt - 1 do
        local p = p0 + 1 + 3 * j
        local key = KEYS[tonumber(A[p])]
        if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, tonumber(A[p + 2])) end
      end
    end
    out[c] = denied
    if mkey then redis.call('SET', mkey, denied, 'EX', tonumber(A[i + 2 * (c - 1) + 1])) end
  end
end
return table.concat(out, ',')
"""


def queue_checks(pipe: Pipeline, checks: list[list[Counter]], decisions: list[str] | None = None) -> int:
    """Queue the script for ``checks`` on ``pipe``, in pieces run in order; returns how many commands it queued.

    ``decisions``: one key per check (e.g. per event and channel) remembering its outcome.
    """
    cut = pieces(len(checks))
    for piece in cut:
        keys, argv = script_args(checks[piece.start:piece.stop],
                                 decisions[piece.start:piece.stop] if decisions is not None else None)
        pipe.eval(LUA, len(keys), *keys, ",".join(map(str, argv)))
    return len(cut)


def _numbers(replies: bytes | str | list[bytes | str]) -> list[int]:
    """The script's replies (one per piece: a comma-separated string, empty for no check) as one list."""
    parts = replies if isinstance(replies, list) else [replies]
    return [int(x) for reply in parts for x in (reply.encode() if isinstance(reply, str) else reply).split(b",") if x]


class RateLimitStore(Protocol):
    @property
    def prefix(self) -> str:
        """What counter keys start with (``streams.stages.route.limits.counters(key_prefix=...)``)."""

    def queue_checks(self, batch: RedisBatch, checks: list[list[Counter]],
                     decisions: list[tuple[str, str]]) -> Reply[list[str | None]]:
        """Check and count every check of a batch atomically; per check the denying rule's name or None.

        ``decisions``: the (event id, channel) of each check; its outcome is remembered, so a retried
        batch gets the same answer without counting again.
        """


class RedisRateLimitStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def prefix(self) -> str:
        return self.settings.rkey("rl")

    def queue_checks(self, batch: RedisBatch, checks: list[list[Counter]],
                     decisions: list[tuple[str, str]]) -> Reply[list[str | None]]:
        real = pipeline_of(batch)
        keys = [self.settings.rkey("rl-seen", event_id, channel) for event_id, channel in decisions]
        if not (queued := queue_checks(real.pipe, checks, keys)):
            return Reply.ready([])
        return real.expect(lambda replies: denied_by(checks, _numbers(replies)), commands=queued)


class MemoryRateLimitStore:
    """The twin of the script: ``counts`` per counter key, ``decided`` per (event id, channel). Windows are
    in the keys; the twin does not expire them."""

    prefix = "rl"

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.decided: dict[tuple[str, str], int] = {}

    def queue_checks(self, batch: RedisBatch, checks: list[list[Counter]],
                     decisions: list[tuple[str, str]]) -> Reply[list[str | None]]:
        if not checks:
            return Reply.ready([])

        def run() -> list[str | None]:
            results = []
            for counters_, decision in zip(checks, decisions, strict=True):
                if decision not in self.decided:
                    full = [i for i, c in enumerate(counters_, 1) if self.counts.get(c.key, 0) >= c.limit]
                    if not full:
                        for c in counters_:
                            self.counts[c.key] = self.counts.get(c.key, 0) + 1
                    self.decided[decision] = full[0] if full else 0
                results.append(self.decided[decision])
            return denied_by(checks, results)
        return memory_of(batch).call(run)
