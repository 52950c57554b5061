"""Digests (a route's ``digest``): the key an event is collected under, and the notification a closed window becomes.

The closing record is one of the window's events (the first), published by the scheduler when the window ends with
a header naming the window. Its route gives user, template and channels; the digest's own event id names the window,
so routing it twice is a duplicate like any event.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.kafka.records import InRecord
from streams.routes import Digest
from streams.stages.route.intent import Intent, RouteError

DIGEST_WINDOW = "herald-digest-window"   # header of a closing record: the window it closes


@dataclass(frozen=True, slots=True)
class Collected:
    """An event as its window holds it."""

    event_id: str
    occurred_ms: int
    cancellation_key: str | None
    variables: dict[str, Any]


def digest_key(digest: Digest, intent: Intent) -> str:
    parts = {"user_id": intent.user_id, "event_type": intent.event_type, "category": intent.category,
             "template": intent.template}
    return "\x1f".join(parts[name] for name in digest.key)


def closing_window(rec: InRecord) -> int | None:
    """The window this record closes; None for an ordinary event."""
    value = rec.header(DIGEST_WINDOW)
    if value is None:
        return None
    if not value.isdigit():
        raise RouteError("bad_event", f"{DIGEST_WINDOW} header is not a window id: {value[:40]!r}")
    return int(value)


def digest_event_id(window_id: int) -> str:
    return f"digest:{window_id}"


def digest_variables(items: list[Collected], listed: int) -> dict[str, Any]:
    """``digest``: count, the events listed (all when at most ``listed``, else the first and the last ones), first,
    last and how many were left out of the list."""
    head = (listed + 1) // 2
    if len(items) <= listed:
        first, last = items, []
    else:
        first, last = items[:head], items[len(items) - (listed - head):]
    return {"digest": {
        "count": len(items),
        "events": [i.variables for i in first + last],
        "first": [i.variables for i in first],
        "last": [i.variables for i in last],
        "omitted": len(items) - len(first) - len(last),
    }}
