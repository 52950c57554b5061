"""Step 9: which rate-limit counters a notification increments (fixed windows), and the Lua call's arguments."""
from __future__ import annotations

from typing import NamedTuple

from streams.routes import RateRule


class Counter(NamedTuple):   # a NamedTuple: a recipient builds one per rule, and a frozen dataclass costs 4x that
    key: str
    limit: int
    ttl: int
    rule: str


def counters(rules: tuple[RateRule, ...], key_prefix: str, *, user: str, channel: str, category: str,
             event_type: str, now_ms: int, critical: bool = False) -> list[Counter]:
    """The counters one (event, channel) notification counts against; the window is part of the key.
    A critical category is exempt from every rule that does not name it."""
    who = _part(user)
    return [Counter(who.join(around), limit, ttl, name)
            for around, limit, ttl, name in _windows(rules, key_prefix, channel, category, event_type, critical, now_ms)]


Window = tuple[tuple[str, ...], int, int, str]   # the key's text around the user (its bucket included), limit, ttl, rule
_WINDOWS: dict[tuple[int, str, str, str, str, bool, int], tuple[tuple[RateRule, ...], tuple[Window, ...]]] = {}


def _windows(rules: tuple[RateRule, ...], key_prefix: str, channel: str, category: str, event_type: str,
             critical: bool, now_ms: int) -> tuple[Window, ...]:
    """Per rule that applies: the key around the user's places with this second's bucket at its end, and what the
    Counter holds besides. A campaign's recipients share everything but the user, and a batch's one ``now``: this is
    worked out once for them, not per recipient. Windows are whole seconds, so the bucket ``now_ms // (window * 1000)``
    is that of the second. Cached by the rules' identity (an ``lru_cache`` would hash every rule on every call)."""
    now_s = now_ms // 1000
    key = (id(rules), key_prefix, channel, category, event_type, critical, now_s)
    hit = _WINDOWS.get(key)
    if hit is not None and hit[0] is rules:
        return hit[1]
    # the key lives one window past its bucket's end, no longer
    made = tuple(((*around[:-1], f"{around[-1]}:{now_s // rule.window_seconds}"), rule.limit, rule.window_seconds + 60,
                  rule.name) for rule, around in _shapes(rules, key_prefix, channel, category, event_type, critical))
    if len(_WINDOWS) >= 4096:
        _WINDOWS.clear()
    _WINDOWS[key] = (rules, made)
    return made


Shape = tuple[RateRule, tuple[str, ...]]


def _shapes(rules: tuple[RateRule, ...], key_prefix: str, channel: str, category: str, event_type: str,
            critical: bool) -> tuple[Shape, ...]:
    """Per rule that applies: (rule, the key's text around the places of the user), so that the user's key is
    ``user.join(around)`` (``_windows`` keeps the result)."""
    values = {"channel": channel, "category": category, "event_type": event_type}
    return tuple((rule, _around(f"{key_prefix}:{rule.name}:", [None if k == "user" else _part(values[k]) for k in rule.key]))
                 for rule in rules if rule.applies(channel, category, critical))


def _around(head: str, parts: list[str | None]) -> tuple[str, ...]:
    """``head`` and ``parts`` joined by ':', cut where the user goes (None)."""
    pieces: list[str] = []
    text = head
    for i, part in enumerate(parts):
        text += ":" if i else ""
        if part is None:
            pieces.append(text)
            text = ""
        else:
            text += part
    pieces.append(text)
    return tuple(pieces)


def _part(value: str) -> str:
    """A key part that cannot contain the separator: user ``u:marketing`` never shares a counter with user ``u``."""
    return value.replace("%", "%25").replace(":", "%3A")


def script_args(checks: list[list[Counter]],
                decisions: list[tuple[str, int]] | None = None) -> tuple[list[str], list[int]]:
    """KEYS and ARGV of the rate-limit script for a batch of checks (each a list of counters).

    ``decisions`` (per check, the key and byte position remembering its outcome) are appended as (key index,
    position, ttl) triples: the ttl is the check's longest.
    """
    index: dict[str, int] = {}
    argv: list[int] = [len(checks)]
    longest: list[int] = []
    for counters_ in checks:
        argv.append(len(counters_))
        ttl = 0 if counters_ else 60
        for c in counters_:
            i = index.get(c.key)
            if i is None:
                i = index[c.key] = len(index) + 1
            argv += (i, c.limit, c.ttl)
            if c.ttl > ttl:
                ttl = c.ttl
        longest.append(ttl)
    if decisions is not None:
        for (key, position), ttl in zip(decisions, longest, strict=True):
            i = index.get(key)
            if i is None:
                i = index[key] = len(index) + 1
            argv += (i, position, ttl)
    return list(index), argv


def denied_by(checks: list[list[Counter]], results: list[int]) -> list[str | None]:
    """Script results (0 allowed, i = the i-th counter was full) → the denying rule's name per check."""
    return [None if r == 0 else cs[int(r) - 1].rule for cs, r in zip(checks, results, strict=True)]
