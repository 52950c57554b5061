"""Step 9: which rate-limit counters a notification increments (fixed windows), and the Lua call's arguments."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from streams.routes import RateRule


@dataclass(frozen=True, slots=True)
class Counter:
    key: str
    limit: int
    ttl: int
    rule: str


def counters(rules: tuple[RateRule, ...], key_prefix: str, *, user: str, channel: str, category: str,
             event_type: str, now_ms: int, critical: bool = False) -> list[Counter]:
    """The counters one (event, channel) notification counts against; the window is part of the key.
    A critical category is exempt from every rule that does not name it."""
    out = []
    who = _part(user)
    for rule, head, parts in _shapes(rules, key_prefix, channel, category, event_type, critical):
        bucket = now_ms // (rule.window_seconds * 1000)
        key = head + ":".join(who if p is None else p for p in parts)
        # the key lives one window past its bucket's end, no longer
        out.append(Counter(f"{key}:{bucket}", rule.limit, rule.window_seconds + 60, rule.name))
    return out


@lru_cache(maxsize=4096)
def _shapes(rules: tuple[RateRule, ...], key_prefix: str, channel: str, category: str, event_type: str,
            critical: bool) -> tuple[tuple[RateRule, str, tuple[str | None, ...]], ...]:
    """Per rule that applies: (rule, key head, key parts with None where the user goes). A campaign's recipients
    share everything but the user, so this is worked out once, not per recipient."""
    values = {"channel": channel, "category": category, "event_type": event_type}
    return tuple((rule, f"{key_prefix}:{rule.name}:", tuple(None if k == "user" else _part(values[k]) for k in rule.key))
                 for rule in rules if rule.applies(channel, category, critical))


def _part(value: str) -> str:
    """A key part that cannot contain the separator: user ``u:marketing`` never shares a counter with user ``u``."""
    return value.replace("%", "%25").replace(":", "%3A")


def script_args(checks: list[list[Counter]], decisions: list[str] | None = None) -> tuple[list[str], list[int]]:
    """KEYS and ARGV of the rate-limit script for a batch of checks (each a list of counters).

    ``decisions`` (one key per check) are appended as (key index, ttl) pairs: the ttl is the check's longest.
    """
    index: dict[str, int] = {}
    argv: list[int] = [len(checks)]
    for counters_ in checks:
        argv.append(len(counters_))
        for c in counters_:
            i = index.setdefault(c.key, len(index) + 1)
            argv += [i, c.limit, c.ttl]
    if decisions is not None:
        for key, counters_ in zip(decisions, checks, strict=True):
            argv += [index.setdefault(key, len(index) + 1), max((c.ttl for c in counters_), default=60)]
    return list(index), argv


def denied_by(checks: list[list[Counter]], results: list[int]) -> list[str | None]:
    """Script results (0 allowed, i = the i-th counter was full) → the denying rule's name per check."""
    return [None if r == 0 else cs[int(r) - 1].rule for cs, r in zip(checks, results, strict=True)]
