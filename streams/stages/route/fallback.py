"""Channel fallback (a route's ``fallback``): the record the scheduler brings back, and whether it still goes.

Routing an event whose route has a fallback also schedules the event's own bytes for ``after`` with two headers
naming the fallback channel and its condition. When the scheduler publishes it, the route stage reads those headers:
if no channel of the notification reached the condition (a receipt said delivered, or opened), the event is routed
again on the fallback channel alone, de-duplicated by (event id, channel) like any delivery; otherwise it is skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from infra.kafka.records import InRecord
from schemas.vocabulary import Channel, Status
from streams.routes import FALLBACK_MET_BY, Fallback
from streams.stages.route.intent import Intent, RouteError

FALLBACK = "herald-fallback"                 # the channel to fall back to
FALLBACK_UNLESS = "herald-fallback-unless"   # the condition that makes it unnecessary


@dataclass(frozen=True, slots=True)
class FallbackPass:
    channel: Channel
    unless: str

    @property
    def met_by(self) -> frozenset[Status]:
        return FALLBACK_MET_BY[self.unless]


def fallback_headers(fallback: Fallback) -> dict[str, str]:
    return {FALLBACK: fallback.to, FALLBACK_UNLESS: fallback.unless}


def fallback_pass(rec: InRecord) -> FallbackPass | None:
    """The fallback this record is the scheduled check of; None for an ordinary event."""
    channel = rec.header(FALLBACK)
    if channel is None:
        return None
    unless = rec.header(FALLBACK_UNLESS) or "delivered"
    if channel not in tuple(Channel) or unless not in FALLBACK_MET_BY:
        raise RouteError("bad_event", f"fallback headers name an unknown channel or condition: {channel!r}, {unless!r}")
    return FallbackPass(Channel(channel), unless)


def wanted(fallback: Fallback | None, intent: Intent) -> bool:
    """Whether routing ``intent`` schedules its fallback check."""
    return fallback is not None and fallback.to not in intent.channels


def fallback_intent(intent: Intent, fallback: FallbackPass) -> Intent:
    return replace(intent, channels=(fallback.channel,))
