"""Route configuration (infra/config/routes.yaml): loading and validation.

A bad file stops the worker at start with an error that names the route and
the field, rather than dead-lettering every event later.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from infra.settings import CHANNELS
from schemas.vocabulary import Status

# request records carry template, channels, category and variables themselves
REQUEST_RECORDS = ("NotificationRequested", "CampaignMessage")
LANES = ("interactive", "bulk")
LIMIT_KEY_PARTS = ("user", "channel", "category", "event_type")
# a fallback's condition → the statuses (of any of the notification's channels) that meet it
FALLBACK_MET_BY: dict[str, frozenset[Status]] = {
    "delivered": frozenset({Status.DELIVERED, Status.OPENED, Status.CLICKED}),
    "opened": frozenset({Status.OPENED, Status.CLICKED}),
}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DIGEST_KEY_PARTS = ("user_id", "event_type", "category", "template")
MAX_DIGEST_LISTED = 1000


class RouteConfigError(ValueError):
    """The routes file is invalid; the message names the route (or section) and the field."""


@dataclass(frozen=True, slots=True)
class Fallback:
    """Send on ``to`` when, ``after_seconds`` after routing, no channel of the notification has reached ``unless``."""

    after_seconds: int
    unless: str      # a key of FALLBACK_MET_BY
    to: str          # a channel

    @property
    def met_by(self) -> frozenset[Status]:
        return FALLBACK_MET_BY[self.unless]


@dataclass(frozen=True, slots=True)
class Digest:
    """Collect a user's events for ``window_seconds`` from the first one, then send one notification listing them."""

    window_seconds: int
    key: tuple[str, ...]   # of DIGEST_KEY_PARTS; events with equal values share a window
    max: int               # how many events the digest lists (the first and the last ones); the count has them all


@dataclass(frozen=True, slots=True)
class Route:
    event_type: str
    recipient: str
    template: str | None
    channels: tuple[str, ...]
    category: str | None
    lane: str
    ttl_seconds: int
    fallback: Fallback | None = None
    digest: Digest | None = None


@dataclass(frozen=True, slots=True)
class RateRule:
    name: str
    key: tuple[str, ...]
    limit: int
    window_seconds: int
    channels: frozenset[str] | None = None
    categories: frozenset[str] | None = None

    def applies(self, channel: str, category: str, critical: bool = False) -> bool:
        """A critical category (a password reset) counts only against a rule that names it in ``categories``."""
        if critical and (self.categories is None or category not in self.categories):
            return False
        return (self.channels is None or channel in self.channels) and (
            self.categories is None or category in self.categories
        )


@dataclass(frozen=True)
class RouteConfig:
    routes: dict[str, Route]
    critical_categories: frozenset[str] = frozenset({"security"})
    quiet_hours_channels: frozenset[str] = frozenset({"sms", "push"})
    rate_limits: tuple[RateRule, ...] = ()
    template_refresh_seconds: float = 5.0
    source: str = field(default="<memory>", compare=False)

    def is_critical(self, category: str) -> bool:
        return category in self.critical_categories

    def critical_events(self) -> frozenset[str]:
        """The event types routed to a critical category on the interactive lane: emitted to the critical events topic."""
        return frozenset(name for name, r in self.routes.items()
                         if r.category is not None and self.is_critical(r.category) and r.lane == "interactive")


def default_routes_path() -> Path:
    return Path(str(resources.files("infra") / "config" / "routes.yaml"))


def load_routes(path: Path | None = None, known_records: dict[str, set[str]] | None = None) -> RouteConfig:
    """Read and validate the routes file (default: the packaged one).

    ``known_records`` maps record short names to their field names (from the
    schema catalog); when given, every route must name a catalogued record and
    an existing recipient field.
    """
    path = path or default_routes_path()
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise RouteConfigError(f"{path}: cannot read the routes file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RouteConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_routes(raw, str(path), known_records)


def parse_routes(raw: Any, source: str = "<memory>", known_records: dict[str, set[str]] | None = None) -> RouteConfig:
    if not isinstance(raw, dict):
        raise RouteConfigError(f"{source}: expected a mapping with a 'routes' section")
    routes_raw = raw.get("routes")
    if not isinstance(routes_raw, dict) or not routes_raw:
        raise RouteConfigError(f"{source}: 'routes' must be a non-empty mapping of event type → route")
    routes = {name: _route(source, str(name), spec, known_records) for name, spec in routes_raw.items()}
    critical = _str_list(source, "critical_categories", raw.get("critical_categories", ["security"]))
    quiet = _str_list(source, "quiet_hours_channels", raw.get("quiet_hours_channels", ["sms", "push"]))
    for ch in quiet:
        if ch not in CHANNELS:
            raise RouteConfigError(f"{source}: quiet_hours_channels: unknown channel {ch!r} (expected one of {', '.join(CHANNELS)})")
    refresh = raw.get("template_refresh_seconds", 5)
    if not isinstance(refresh, (int, float)) or refresh < 0:
        raise RouteConfigError(f"{source}: template_refresh_seconds: expected a number >= 0, got {refresh!r}")
    rules_raw = raw.get("rate_limits", [])
    if not isinstance(rules_raw, list):
        raise RouteConfigError(f"{source}: rate_limits: expected a list of rules")
    rules = tuple(_rule(source, i, r) for i, r in enumerate(rules_raw))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise RouteConfigError(f"{source}: rate_limits: rule names must be unique, got {names}")
    return RouteConfig(routes, frozenset(critical), frozenset(quiet), rules, float(refresh), source)


def _route(source: str, name: str, spec: Any, known: dict[str, set[str]] | None) -> Route:
    where = f"{source}: route {name!r}"
    if not isinstance(spec, dict):
        raise RouteConfigError(f"{where}: expected a mapping of fields")
    allowed = {"recipient", "template", "channels", "category", "lane", "ttl_seconds", "fallback", "digest"}
    if extra := set(spec) - allowed:
        raise RouteConfigError(f"{where}: unknown field(s) {', '.join(sorted(extra))} (allowed: {', '.join(sorted(allowed))})")
    if known is not None and name not in known:
        raise RouteConfigError(f"{where}: no record of that name in the schema catalog")
    recipient = spec.get("recipient")
    if not isinstance(recipient, str) or not recipient:
        raise RouteConfigError(f"{where}: field 'recipient': required, the event field holding the user id")
    if known is not None and recipient not in known[name]:
        raise RouteConfigError(f"{where}: field 'recipient': {name} has no field {recipient!r}")
    is_request = name in REQUEST_RECORDS
    template = spec.get("template")
    channels = spec.get("channels")
    category = spec.get("category")
    if not is_request:
        if not isinstance(template, str) or not template:
            raise RouteConfigError(f"{where}: field 'template': required, a template code")
        if not isinstance(channels, list) or not channels:
            raise RouteConfigError(f"{where}: field 'channels': required, a non-empty list of {', '.join(CHANNELS)}")
        if not isinstance(category, str) or not category:
            raise RouteConfigError(f"{where}: field 'category': required (transactional, social, marketing, security...)")
    for ch in channels or []:
        if ch not in CHANNELS:
            raise RouteConfigError(f"{where}: field 'channels': unknown channel {ch!r} (expected one of {', '.join(CHANNELS)})")
    if channels and len(set(channels)) != len(channels):
        raise RouteConfigError(f"{where}: field 'channels': listed twice in {channels}")
    lane = spec.get("lane", "interactive")
    if lane not in LANES:
        raise RouteConfigError(f"{where}: field 'lane': {lane!r} is not one of {', '.join(LANES)}")
    ttl = spec.get("ttl_seconds")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
        raise RouteConfigError(f"{where}: field 'ttl_seconds': required, a positive number of seconds, got {ttl!r}")
    fallback = _fallback(where, spec["fallback"], channels or [], lane, ttl) if "fallback" in spec else None
    digest = _digest(where, spec["digest"], lane) if "digest" in spec else None
    if fallback is not None and digest is not None:
        raise RouteConfigError(f"{where}: a route has a fallback or a digest, not both")
    return Route(name, recipient, template, tuple(channels or ()), category, lane, ttl, fallback, digest)


def _option(where: str, name: str, raw: Any, fields: tuple[str, ...], example: str, lane: str,
            on_bulk: str) -> tuple[str, dict[str, Any]]:
    """A route option's mapping (``fallback``, ``digest``): of ``fields`` only (an error names them in this order),
    on an interactive route (``on_bulk``: the error's reason otherwise). Returns it, and its errors' prefix."""
    where = f"{where}: field {name!r}"
    if not isinstance(raw, dict):
        raise RouteConfigError(f"{where}: expected a mapping like {example}")
    if extra := set(raw) - set(fields):
        raise RouteConfigError(f"{where}: unknown field(s) {', '.join(sorted(extra))} (allowed: {', '.join(fields)})")
    if lane != "interactive":
        raise RouteConfigError(f"{where}: {on_bulk}")
    return where, raw


def _digest(where: str, raw: Any, lane: str) -> Digest:
    where, raw = _option(where, "digest", raw, ("key", "max", "window"), "{window: 1h, key: [user_id, event_type], max: 50}",
                         lane, "only an interactive route collects a digest")
    window = _duration(f"{where}: 'window'", raw.get("window"))
    key = raw.get("key", ["user_id", "event_type"])
    if not isinstance(key, list) or any(k not in DIGEST_KEY_PARTS for k in key) or "user_id" not in key:
        raise RouteConfigError(f"{where}: 'key': a list of {', '.join(DIGEST_KEY_PARTS)} with user_id in it, got {key!r}")
    most = raw.get("max", 50)
    if not isinstance(most, int) or isinstance(most, bool) or not 1 <= most <= MAX_DIGEST_LISTED:
        raise RouteConfigError(f"{where}: 'max': how many events the digest lists, 1 to {MAX_DIGEST_LISTED}, got {most!r}")
    return Digest(window, tuple(dict.fromkeys(key)), most)


def _fallback(where: str, raw: Any, channels: list[str], lane: str, ttl: int) -> Fallback:
    where, raw = _option(where, "fallback", raw, ("after", "unless", "to"), "{after: 10m, unless: delivered, to: sms}",
                         lane, "only an interactive route falls back (a campaign has no per-message fallback)")
    after = _duration(f"{where}: 'after'", raw.get("after"))
    if after >= ttl:
        raise RouteConfigError(f"{where}: 'after' ({after} s) must be shorter than the route's ttl_seconds ({ttl})")
    unless = raw.get("unless")
    if unless not in FALLBACK_MET_BY:
        raise RouteConfigError(f"{where}: 'unless': one of {', '.join(FALLBACK_MET_BY)}, got {unless!r}")
    to = raw.get("to")
    if to not in CHANNELS:
        raise RouteConfigError(f"{where}: 'to': unknown channel {to!r} (expected one of {', '.join(CHANNELS)})")
    if to in channels:
        raise RouteConfigError(f"{where}: 'to': {to} is already one of the route's channels")
    return Fallback(after, unless, to)


def _duration(where: str, value: Any) -> int:
    """Seconds from 90, "90s", "10m", "2h" or "1d"."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and len(value) > 1 and value[:-1].isdigit() and value[-1] in _DURATION_UNITS:
        seconds = int(value[:-1]) * _DURATION_UNITS[value[-1]]
        if seconds > 0:
            return seconds
    raise RouteConfigError(f"{where}: a positive duration such as 90, 90s, 10m, 2h or 1d, got {value!r}")


def _rule(source: str, i: int, r: Any) -> RateRule:
    where = f"{source}: rate_limits[{i}]"
    if not isinstance(r, dict):
        raise RouteConfigError(f"{where}: expected a mapping")
    name = r.get("name")
    if not isinstance(name, str) or not name or ":" in name:
        raise RouteConfigError(f"{where}: field 'name': required, without ':'")
    where = f"{source}: rate limit {name!r}"
    key = r.get("key")
    if not isinstance(key, list) or not key or any(k not in LIMIT_KEY_PARTS for k in key):
        raise RouteConfigError(f"{where}: field 'key': a non-empty list of {', '.join(LIMIT_KEY_PARTS)}, got {key!r}")
    limit, window = r.get("limit"), r.get("window_seconds")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise RouteConfigError(f"{where}: field 'limit': a number >= 0, got {limit!r}")
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        raise RouteConfigError(f"{where}: field 'window_seconds': a positive number, got {window!r}")
    channels = r.get("channels")
    if channels is not None:
        for ch in _str_list(source, f"rate limit {name!r}: field 'channels'", channels):
            if ch not in CHANNELS:
                raise RouteConfigError(f"{where}: field 'channels': unknown channel {ch!r}")
    categories = r.get("categories")
    if categories is not None:
        _str_list(source, f"rate limit {name!r}: field 'categories'", categories)
    return RateRule(
        name, tuple(key), limit, window,
        frozenset(channels) if channels is not None else None,
        frozenset(categories) if categories is not None else None,
    )


def _str_list(source: str, what: str, value: Any) -> list[str]:
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise RouteConfigError(f"{source}: {what}: expected a list of names, got {value!r}")
    return value
