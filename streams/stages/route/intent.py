"""Steps 1–2: a decoded record and its route → what to notify (an Intent), or a reason to dead-letter it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

from schemas.codec import Decoded
from schemas.vocabulary import CHANNELS, Channel, Lane
from streams.routes import REQUEST_RECORDS, RouteConfig
from streams.stages.route.recipient import Recipient
from streams.stages.route.window import parse_window

# an identifier longer than this is not one (PostgreSQL's btree keys stop near 2,700 bytes)
MAX_ID_CHARS = 512


class RouteError(ValueError):
    """The record decoded but cannot be routed; ``reason`` is the DLQ error class."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class Intent:
    event_id: str
    event_type: str
    user_id: str
    template: str
    channels: tuple[Channel, ...]
    category: str
    lane: Lane
    ttl_seconds: int
    occurred_ms: int
    send_at_ms: int | None
    critical: bool
    variables: dict[str, Any] = field(default_factory=dict)
    campaign_id: str | None = None
    inline: Recipient | None = None  # addresses a request brought, for a user Herald does not store
    cancellation_key: str | None = None  # a cancel of this key ends the notification 'canceled' while it waits
    window: tuple[time, time] | None = None  # a campaign's send window in the recipient's zone (CampaignChunk v2)
    chunk_position: int | None = None  # a campaign chunk's recipient: its place among the chunk's user_ids


def inline_recipient(user_id: str, given: dict[str, Any] | None) -> Recipient | None:
    if not given:
        return None
    return Recipient(
        id=user_id, email=given.get("email") or None, phone=given.get("phone") or None,
        locale=given.get("locale") or "en", time_zone=given.get("time_zone") or "UTC",
        first_name=given.get("first_name"), devices=list(given.get("push_tokens") or []),
    )


def to_ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


_CHANNEL_OF: dict[str, Channel] = {str(c): Channel(c) for c in CHANNELS}   # a dict look-up, not an enum call per channel
_LANE_OF: dict[str, Lane] = {str(lane): lane for lane in Lane}


def intent_for(decoded: Decoded, cfg: RouteConfig, bulk: bool = False) -> Intent:
    """Build the Intent of one decoded record; raises RouteError (``no_route``, ``bad_event``, ``bad_variables``)."""
    route = cfg.routes.get(decoded.name)
    if route is None:
        raise RouteError("no_route", f"no route for event type {decoded.name!r} (routes: {', '.join(sorted(cfg.routes))})")
    rec = decoded.record
    user_id = rec.get(route.recipient)
    if not isinstance(user_id, str) or not user_id:
        raise RouteError("bad_event", f"{decoded.name}: recipient field {route.recipient!r} is empty")
    event_id = rec.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise RouteError("bad_event", f"{decoded.name}: event_id is empty")
    for name, value in ((route.recipient, user_id), ("event_id", event_id)):
        # identifiers become PostgreSQL keys and Redis key parts: no NUL (PostgreSQL refuses it), none over a key's size
        if "\x00" in value or len(value) > MAX_ID_CHARS:
            raise RouteError("bad_event", f"{decoded.name}: {name} holds a NUL byte or is over {MAX_ID_CHARS} characters")
    if decoded.name in REQUEST_RECORDS:
        template = rec["template"]
        channels = tuple(dict.fromkeys(rec["channels"]))  # de-duplicated, order kept
        category = rec["category"]
        variables = _variables(rec.get("variables_json") or "{}", f"{decoded.name} {event_id}")
        if not template:
            raise RouteError("bad_event", f"{decoded.name} {event_id}: template is empty")
        if not channels:
            raise RouteError("bad_event", f"{decoded.name} {event_id}: no channels")
    else:
        template, channels, category = route.template or "", route.channels, route.category or ""
        variables = dict(rec)
    for ch in channels:
        if ch not in _CHANNEL_OF:
            raise RouteError("bad_event", f"{decoded.name} {event_id}: unknown channel {ch!r}")
    channels = tuple(_CHANNEL_OF[ch] for ch in channels)
    ttl = rec.get("ttl_seconds") or route.ttl_seconds
    cancellation_key = rec.get("cancellation_key") or None
    if cancellation_key is not None and (not isinstance(cancellation_key, str) or "\x00" in cancellation_key
                                         or len(cancellation_key) > MAX_ID_CHARS):
        raise RouteError("bad_event", f"{decoded.name} {event_id}: cancellation_key holds a NUL byte or is over "
                                      f"{MAX_ID_CHARS} characters")
    return Intent(
        event_id=event_id,
        event_type=decoded.name,
        user_id=user_id,
        template=template,
        channels=channels,
        category=category,
        lane=Lane.BULK if bulk else _LANE_OF[route.lane],
        ttl_seconds=int(ttl),
        occurred_ms=to_ms(rec.get("occurred_at")) or 0,
        send_at_ms=to_ms(rec.get("send_at")),
        critical=cfg.is_critical(category),
        variables=variables,
        campaign_id=rec.get("campaign_id"),
        inline=inline_recipient(user_id, rec.get("recipient")),
        cancellation_key=cancellation_key,
    )


def chunk_intents(decoded: Decoded, cfg: RouteConfig) -> tuple[list[Intent], list[str]]:
    """A ``CampaignChunk`` → one bulk Intent per recipient, as its own ``CampaignMessage`` would give, and the
    problems of recipients that cannot be routed (each names its user). Raises RouteError for the whole chunk."""
    route = cfg.routes.get("CampaignMessage")
    if route is None:
        raise RouteError("no_route", "no route for CampaignMessage: campaign chunks are routed by it")
    rec = decoded.record
    campaign_id, template = rec["campaign_id"], rec["template"]
    where = f"CampaignChunk {rec['chunk_id']}"
    shared = _variables(rec["variables_json"], where)
    channels = tuple(dict.fromkeys(rec["channels"]))
    if not template:
        raise RouteError("bad_event", f"{where}: template is empty")
    if not channels:
        raise RouteError("bad_event", f"{where}: no channels")
    if not campaign_id or "\x00" in campaign_id or len(campaign_id) > MAX_ID_CHARS // 2:
        raise RouteError("bad_event", f"{where}: campaign_id is empty, holds a NUL byte or is too long")
    users: list[str] = rec["user_ids"]
    own: list[str | None] = rec["user_variables_json"] or [None] * len(users)
    if len(own) != len(users):
        raise RouteError("bad_event", f"{where}: {len(own)} user_variables_json for {len(users)} user_ids")
    try:
        window = parse_window(rec["send_window"]) if rec.get("send_window") else None
    except ValueError as exc:
        raise RouteError("bad_event", f"{where}: {exc}") from exc
    occurred, category = to_ms(rec["occurred_at"]) or 0, rec["category"]
    critical, ttl = cfg.is_critical(category), int(route.ttl_seconds)
    typed = tuple(_CHANNEL_OF[ch] for ch in channels)
    intents: list[Intent] = []
    problems: list[str] = []
    for position, (user_id, variables_json) in enumerate(zip(users, own, strict=True)):
        if not user_id or "\x00" in user_id or len(user_id) > MAX_ID_CHARS // 2:
            problems.append(f"user id {user_id[:40]!r} is empty, holds a NUL byte or is too long")
            continue
        try:
            variables = shared if variables_json is None else {**shared, **_variables(variables_json, f"{where} {user_id}")}
        except RouteError as exc:
            problems.append(str(exc))
            continue
        intents.append(Intent(f"{campaign_id}:{user_id}", "CampaignMessage", user_id, template, typed, category, Lane.BULK,
                              ttl, occurred, None, critical, variables, campaign_id, None, window=window,
                              chunk_position=position))
    return intents, problems


def _variables(text: str, where: str) -> dict[str, Any]:
    try:
        variables = json.loads(text or "{}")
    except RecursionError as exc:
        raise RouteError("bad_variables", f"{where}: variables_json is nested too deeply") from exc
    except ValueError as exc:
        raise RouteError("bad_variables", f"{where}: variables_json is not JSON: {exc}") from exc
    if not isinstance(variables, dict):
        raise RouteError("bad_variables", f"{where}: variables_json must be a JSON object")
    return variables
