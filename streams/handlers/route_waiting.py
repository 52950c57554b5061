"""The route stage's waiting features: channel fallback and digests (a route's ``fallback`` or ``digest``).

Both wait through the scheduler: routing an interactive event schedules a record that comes back later, a
fallback's check ``after`` the event was routed, or a digest window's closing record when the window ends. The route
handler reads those records' two headers once, as it admits a record (``returned``); the admitted item carries what
they said to ``Waiting.hold``, the handler's step between the cancel checks and the claims. A campaign's intents
(the bulk lane) go through it with no header read and no route look-up.

The pure parts live in streams/stages/route/fallback.py and digest.py, the stores in streams/stores/statuses.py
(what a check reads) and digests.py (the windows).
"""
from __future__ import annotations

from dataclasses import dataclass, replace as replaced
from typing import Protocol

from infra.kafka.records import InRecord
from schemas.vocabulary import Channel, Lane, Status
from streams.routes import Route
from streams.stages.route.digest import DIGEST_WINDOW, Collected, closing_window, digest_event_id, digest_key, digest_variables
from streams.stages.route.fallback import FallbackPass, fallback_headers, fallback_intent, fallback_pass, wanted
from streams.stages.route.intent import Intent
from streams.stores.cancellations import CancellationView
from streams.stores.digests import DigestItem, DigestStore
from streams.stores.scheduled_rows import ScheduledRow, row_headers
from streams.stores.statuses import StatusStore

DIGEST_LISTED = 50   # how many events a closing lists when its route no longer has a digest


@dataclass(frozen=True, slots=True)
class Returned:
    """A record the scheduler brought back for a waiting feature: the fallback check it is, or the window it closes."""

    check: FallbackPass | None = None
    window: int | None = None

    def intent(self, intent: Intent, now: int) -> Intent:
        """What goes on from here: the event on its fallback channel alone, or the window's digest (its own id, due
        now; ``Waiting.hold`` gives it the events the window held)."""
        if self.check is not None:
            return fallback_intent(intent, self.check)
        assert self.window is not None
        return replaced(intent, event_id=digest_event_id(self.window), cancellation_key=None, occurred_ms=now,
                        send_at_ms=None)


def returned(rec: InRecord) -> Returned | None:
    """What an interactive record's headers say it is; None for an ordinary event. Bad headers raise RouteError."""
    if (check := fallback_pass(rec)) is not None:
        return Returned(check=check)
    if (window := closing_window(rec)) is not None:
        return Returned(window=window)
    return None


# a record, one intent it routes, and what the record's headers said (None: an ordinary event, or a campaign's)
Admitted = tuple[InRecord, Intent, Returned | None]


class Outcomes(Protocol):
    """What the waiting features write to: the route handler's result of one batch."""

    scheduled: list[ScheduledRow]

    def count(self, outcome: str, reason: str = "", n: int = 1) -> None: ...

    def status(self, rec: InRecord, intent: Intent, status: Status, channel: Channel | None, reason: str | None,
               delivery_id: str | None = None) -> None: ...


class Waiting:
    """Channel fallback and digests over a route handler's routes and stores."""

    def __init__(self, routes: dict[str, Route], statuses: StatusStore | None, digests: DigestStore | None,
                 cancellations: CancellationView | None) -> None:
        # most routes wait for nothing: their events miss this look-up
        self.routes = {name: route for name, route in routes.items() if route.fallback is not None or route.digest is not None}
        self.statuses = statuses   # None: every fallback check goes
        self.digests = digests     # None: a digest route's events go out one by one
        self.cancellations = cancellations

    async def hold(self, live: list[Admitted], now: int, res: Outcomes) -> list[Admitted]:
        """What goes on to the claims: ordinary events (with their fallback check scheduled, where the route has
        one), the fallback checks no receipt made unnecessary, and the digests of the windows closing; a digest
        route's events stay behind in their windows. At most one status read and two digest transactions a batch."""
        going: list[Admitted] = []
        checks: list[tuple[InRecord, Intent, FallbackPass]] = []
        collecting: list[tuple[InRecord, Intent, DigestItem]] = []
        closing: list[tuple[InRecord, Intent, int]] = []
        collects = self.digests is not None
        for item in live:
            rec, intent, back = item
            if back is not None:
                if back.check is not None:
                    checks.append((rec, intent, back.check))
                elif back.window is not None and collects:
                    closing.append((rec, intent, back.window))
                else:
                    going.append(item)
                continue
            if intent.lane == Lane.BULK:   # a campaign has no fallback and collects no digest
                going.append(item)
                continue
            route = self.routes.get(intent.event_type)
            if route is None:
                going.append(item)
                continue
            if route.fallback is not None and wanted(route.fallback, intent):
                res.scheduled.append(ScheduledRow(
                    now + route.fallback.after_seconds * 1000, rec.topic, rec.key, rec.value or b"",
                    {**row_headers(rec), **fallback_headers(route.fallback)}, "fallback", intent.event_id,
                    f"fallback:{intent.event_id}", intent.cancellation_key))
            if route.digest is not None and collects:
                collecting.append((rec, intent, DigestItem(
                    digest_key(route.digest, intent), intent.event_id, intent.user_id, route.digest.window_seconds,
                    intent.occurred_ms, intent.cancellation_key, intent.variables)))
            else:
                going.append(item)
        if checks:
            await self._check(checks, going, res)
        if collecting:
            await self._collect(collecting, res)
        if closing:
            await self._close(closing, going, res)
        return going

    async def _check(self, checks: list[tuple[InRecord, Intent, FallbackPass]], going: list[Admitted],
                     res: Outcomes) -> None:
        """A check that came due goes on to its fallback channel alone unless a channel of the notification reached
        its condition (one read for the batch)."""
        reached: dict[str, set[Status]] = {}
        if self.statuses is not None:
            reached = await self.statuses.reached({i.event_id for _, i, _ in checks},
                                                  set().union(*(c.met_by for _, _, c in checks)))
        for rec, intent, check in checks:
            if reached.get(intent.event_id, set()) & check.met_by:
                res.status(rec, intent, Status.SKIPPED, check.channel, f"fallback_not_needed: {check.unless}")
            else:
                going.append((rec, intent, None))
                res.count("fallback", check.channel)

    async def _collect(self, collecting: list[tuple[InRecord, Intent, DigestItem]], res: Outcomes) -> None:
        """The events join their key's open window (one transaction), and each window new to this batch gets its
        closing record scheduled for when it ends."""
        assert self.digests is not None
        windows = await self.digests.collect([item for _, _, item in collecting])
        closes: dict[int, ScheduledRow] = {}
        for rec, intent, item in collecting:
            res.status(rec, intent, Status.SCHEDULED, None, "digest")
            held_by = windows[item.digest_key]
            closes.setdefault(held_by.window_id, ScheduledRow(
                held_by.closes_ms, rec.topic, rec.key, rec.value or b"",
                {**row_headers(rec), DIGEST_WINDOW: str(held_by.window_id)}, "digest",
                digest_event_id(held_by.window_id), digest_event_id(held_by.window_id)))
        res.scheduled.extend(closes.values())

    async def _close(self, closing: list[tuple[InRecord, Intent, int]], going: list[Admitted], res: Outcomes) -> None:
        """The windows close (one transaction) and each goes on as the digest of the events it held that are not
        canceled; a window left with none sends nothing."""
        assert self.digests is not None
        held = await self.digests.close([window for _, _, window in closing])
        view = self.cancellations
        for rec, intent, window in closing:
            route = self.routes.get(intent.event_type)
            listed = route.digest.max if route is not None and route.digest is not None else DIGEST_LISTED
            kept: list[Collected] = []
            for got in held.get(window, []):
                if view is not None and (why := view.reason(got.event_id, got.cancellation_key, got.occurred_ms)):
                    res.status(rec, replaced(intent, event_id=got.event_id), Status.CANCELED, None, why)
                else:
                    kept.append(got)
            if not kept:
                res.count("digest_empty")
                continue
            for got in kept:
                res.status(rec, replaced(intent, event_id=got.event_id), Status.SKIPPED, None,
                           f"digested: {intent.event_id}")
            going.append((rec, replaced(intent, variables=digest_variables(kept, listed)), None))
