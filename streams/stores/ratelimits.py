"""Rate limits in Redis: a Lua script checks and counts a batch's checks, each atomically.

Each check is a list of counters (key, limit, ttl). A check passes when every
counter is below its limit; then all its counters are incremented. Because the
script runs atomically, two workers racing on one user never exceed a limit.
The script is sent with EVAL inside the batch's pipeline (Redis caches it by
hash), so it costs no extra round trip; a large batch sends it in pieces
(``streams.stores.batch.SCRIPT_PIECE`` checks each), run in order.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

from redis.asyncio.client import Pipeline

from infra.settings import Settings
from streams.stages.route.limits import Counter, denied_by, script_args
from streams.stores.batch import RedisBatch, Reply, memory_of, pieces, pipeline_of

# ARGV[1]: comma-separated numbers (one argument, not thousands: each argument costs the client its own packing):
# n_checks, then per check: n_counters, then per counter: key index (into KEYS), limit, ttl;
# optionally followed, per check, by where its decision is remembered: key index (0: nowhere), byte position, ttl.
# Returns per check 0 (allowed and counted) or the 1-based position of the first full counter, comma-separated in
# one string: redis-py reads an array reply element by element in Python, a line each.
# A check whose decision is stored returns it without counting again: a batch that is retried (an outage, a record
# split out) never counts one (event, channel) twice. A decision is one byte ('0' + the answer) of a string key:
# an event's own key at position 0, or a campaign chunk's key (per record and channel) at the recipient's place in
# the chunk, so a thousand recipients share one key, read once and written in a SETRANGE per run of places.
# A counter is incremented first and given back (DECR) when a check is refused: the common case, allowed, costs an
# INCR per counter (and its EXPIRE when new) and no GET.
LUA = """
local A = {}
for v in string.gmatch(ARGV[1], '[^,]+') do A[#A + 1] = v end
local n = tonumber(A[1])
local starts = {}
local i = 2
for c = 1, n do starts[c] = i; i = i + 1 + 3 * tonumber(A[i]) end
local marked = #A >= i + 3 * n - 1
local out = {}
local stored, made, ttls, order = {}, {}, {}, {}
for c = 1, n do
  local mkey, pos = nil, 0
  if marked then
    local q = i + 3 * (c - 1)
    local mi = tonumber(A[q])
    if mi > 0 then mkey = KEYS[mi]; pos = tonumber(A[q + 1]) end
  end
  local seen = nil
  if mkey then
    local s = stored[mkey]
    if s == nil then
      s = redis.call('GET', mkey) or ''
      stored[mkey] = s; made[mkey] = {}; ttls[mkey] = 0; order[#order + 1] = mkey
    end
    local b = made[mkey][pos] or string.byte(s, pos + 1)
    if b and b >= 48 then seen = b - 48 end
  end
  if seen then
    out[c] = seen
  else
    local p0 = starts[c]
    local cnt = tonumber(A[p0])
    local denied = 0
    for j = 0, cnt - 1 do
      local p = p0 + 1 + 3 * j
      local key = KEYS[tonumber(A[p])]
      local v = redis.call('INCR', key)
      if v == 1 then redis.call('EXPIRE', key, tonumber(A[p + 2])) end
      if denied == 0 and v > tonumber(A[p + 1]) then denied = j + 1 end
    end
    if denied > 0 then
      for j = 0, cnt - 1 do redis.call('DECR', KEYS[tonumber(A[p0 + 1 + 3 * j])]) end
    end
    out[c] = denied
    if mkey then
      made[mkey][pos] = 48 + denied
      local ttl = tonumber(A[i + 3 * (c - 1) + 2])
      if ttl > ttls[mkey] then ttls[mkey] = ttl end
    end
  end
end
for _, k in ipairs(order) do
  local ps = {}
  for p in pairs(made[k]) do ps[#ps + 1] = p end
  if #ps > 0 then
    table.sort(ps)
    local r = 1
    while r <= #ps do
      local e = r
      while e < #ps and ps[e + 1] == ps[e] + 1 do e = e + 1 end
      local bytes = {}
      for x = r, e do bytes[#bytes + 1] = string.char(made[k][ps[x]]) end
      redis.call('SETRANGE', k, ps[r], table.concat(bytes))
      r = e + 1
    end
    if redis.call('TTL', k) < ttls[k] then redis.call('EXPIRE', k, ttls[k]) end
  end
end
return table.concat(out, ',')
"""


class Remembered(NamedTuple):
    """Where a check's decision is kept: an event's (``position`` 0) or a campaign chunk record's, at the place of
    the recipient in the chunk (one key for the chunk's thousand recipients, instead of a key each)."""
    owner: str            # the event id, or the chunk record's Kafka position (``claim_origin``)
    channel: str
    position: int = 0
    chunk: bool = False   # ``owner`` is a record: its own key space, never an event's

    def key_parts(self) -> tuple[str, ...]:
        return ("rl-chunk" if self.chunk else "rl-seen", self.owner, self.channel)


def queue_checks(pipe: Pipeline, checks: list[list[Counter]],
                 decisions: list[tuple[str, int]] | None = None) -> int:
    """Queue the script for ``checks`` on ``pipe``, in pieces run in order; returns how many commands it queued.

    ``decisions``: per check, the key and byte position that remember its outcome.
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
                     decisions: list[Remembered]) -> Reply[list[str | None]]:
        """Check and count every check of a batch atomically; per check the denying rule's name or None.

        ``decisions``: where each check's outcome is remembered, so a retried batch gets the same answer without
        counting again.
        """


class RedisRateLimitStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def prefix(self) -> str:
        return self.settings.rkey("rl")

    def queue_checks(self, batch: RedisBatch, checks: list[list[Counter]],
                     decisions: list[Remembered]) -> Reply[list[str | None]]:
        real = pipeline_of(batch)
        keys: dict[tuple[str, str, bool], str] = {}
        places: list[tuple[str, int]] = []
        for d in decisions:   # a chunk's recipients share their key: worked out once
            if (key := keys.get(group := (d.owner, d.channel, d.chunk))) is None:
                key = keys[group] = self.settings.rkey(*d.key_parts())
            places.append((key, d.position))
        if not (queued := queue_checks(real.pipe, checks, places)):
            return Reply.ready([])
        return real.expect(lambda replies: denied_by(checks, _numbers(replies)), commands=queued)


class MemoryRateLimitStore:
    """The twin of the script: ``counts`` per counter key, ``decided`` per place a decision is remembered.
    Windows are in the keys; the twin does not expire them."""

    prefix = "rl"

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.decided: dict[Remembered, int] = {}

    def queue_checks(self, batch: RedisBatch, checks: list[list[Counter]],
                     decisions: list[Remembered]) -> Reply[list[str | None]]:
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
