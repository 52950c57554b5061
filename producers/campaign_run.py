"""A campaign from start to produced, shared by ``herald campaign send`` and ``POST /v1/campaigns``.

``prepare`` is pre-flight (nothing recorded, nothing produced); ``run`` records
the campaign and produces it, keeping ``campaigns.produced`` up to date, and
leaves the row ``produced``, ``interrupted`` or ``canceled``. The CLI runs it in
the foreground with a progress bar, the API in a background thread.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from infra.settings import Settings
from producers import campaign as cp
from producers.campaign_preflight import Preflight, check
from producers.campaign_source import Recipient, Rejected, SourceError, read_file, read_query


def connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(settings.dsn, autocommit=True, connect_timeout=10)


def recipients(settings: Settings, spec: cp.CampaignSpec) -> Iterable[Recipient | Rejected]:
    """The campaign's recipients, in the same order on every read (a query reads on its own connection)."""
    if "file" in spec.source:
        return read_file(Path(spec.source["file"]))
    if "query" in spec.source:
        return read_query(connect(settings), spec.source["query"])
    raise SourceError(f"campaign {spec.id} has no recipient source")


def prepare(settings: Settings, conn: psycopg.Connection, spec: cp.CampaignSpec) -> Preflight:
    """Pre-flight: raises ``PreflightError`` (the template) or ``SourceError`` (the recipients)."""
    return check(conn, spec, recipients(settings, spec), settings.campaign.delivery_rate,
                 settings.campaign.preflight_sample)


log = logging.getLogger("herald.campaign")


def canceled(conn: psycopg.Connection, campaign_id: str) -> bool:
    row = conn.execute("SELECT canceled_at IS NOT NULL FROM campaigns WHERE id = %s", (campaign_id,)).fetchone()
    return bool(row and row[0])


def cancel(conn: psycopg.Connection, campaign_id: str) -> datetime | None:
    """Mark the campaign canceled (once: the first time stays); None when there is no such campaign."""
    row = conn.execute(
        "UPDATE campaigns SET canceled_at = COALESCE(canceled_at, now()), updated_at = now(), "
        "status = CASE WHEN status IN ('producing', 'scheduled') THEN 'canceled' ELSE status END "
        "WHERE id = %s RETURNING canceled_at", (campaign_id,)).fetchone()
    return row[0] if row else None


ACK_MARGIN_SECONDS = 0.5


def wait_for_workers(settings: Settings, canceled_at: datetime) -> None:
    """Return once every worker's cached view of the campaigns predates ``canceled_at`` no more: their cache lives
    ``cancel_cache_seconds``, and each provider chunk looks again before its call (plus a margin for clock skew)."""
    import time

    due = canceled_at.timestamp() + settings.campaign.cancel_cache_seconds + ACK_MARGIN_SECONDS
    time.sleep(max(0.0, min(due - time.time(), settings.campaign.cancel_cache_seconds + ACK_MARGIN_SECONDS)))


def run(settings: Settings, conn: psycopg.Connection, spec: cp.CampaignSpec, total: int, *, skip: int = 0,
        procs: int = 1, chunk_size: int = 20_000, on_progress: Callable[[int], None] | None = None,
        stop: threading.Event | None = None) -> cp.ProduceReport:
    """Produce the campaign (already recorded) after its first ``skip`` recipients and record how far it got.

    A cancel (``campaigns.canceled_at``, looked at after every chunk) or
    ``stop`` ends production after the chunk in hand: the row is then left
    ``canceled``, or ``interrupted`` (resumable) when nobody canceled it.
    """
    halt = stop if stop is not None else threading.Event()

    def progress(produced: int) -> None:
        is_canceled = canceled(conn, spec.id)
        if is_canceled:
            halt.set()
        cp.set_progress(conn, spec.id, produced, "canceled" if is_canceled else "producing")
        if on_progress:
            on_progress(produced)

    try:
        report = cp.produce(settings, settings.topic("bulk"), spec, recipients(settings, spec), skip=skip, procs=procs,
                            chunk_size=chunk_size, on_progress=progress, stop=halt)
    except SourceError as exc:
        cp.set_progress(conn, spec.id, skip, "interrupted", str(exc))
        raise
    if canceled(conn, spec.id):
        cp.set_progress(conn, spec.id, report.produced, "canceled", "canceled")
    elif report.errors:
        cp.set_progress(conn, spec.id, report.produced, "interrupted", "; ".join(report.errors))
    elif report.interrupted:
        cp.set_progress(conn, spec.id, report.produced, "interrupted", "stopped by the user")
    else:
        cp.set_progress(conn, spec.id, report.produced, "produced", None, total=max(total, report.produced))
    return report


class Background:
    """Campaigns the API produces in threads of its process, one each (``stop_all`` at shutdown: resumable)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._running: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._lock = threading.Lock()

    def start(self, spec: cp.CampaignSpec, total: int, send_at: datetime | None = None) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(spec, total, send_at, stop), name=f"campaign-{spec.id}",
                                  daemon=True)
        with self._lock:
            self._running[spec.id] = (thread, stop)
        thread.start()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def _run(self, spec: cp.CampaignSpec, total: int, send_at: datetime | None, stop: threading.Event) -> None:
        try:
            with connect(self.settings) as conn:
                if send_at is not None:
                    # bounded: wakes every few seconds to see a cancel; the row says 'scheduled' meanwhile
                    for _ in range(10_000_000):
                        left = (send_at - datetime.now(UTC)).total_seconds()
                        if left <= 0 or stop.wait(min(left, 5.0)) or canceled(conn, spec.id):
                            break
                    if stop.is_set() or canceled(conn, spec.id):
                        return
                    cp.set_progress(conn, spec.id, 0)
                run(self.settings, conn, spec, total, stop=stop)
        except Exception:
            log.exception("campaign %s stopped; continue it with `herald campaign send --resume %s`", spec.id, spec.id)
        finally:
            with self._lock:
                self._running.pop(spec.id, None)

    def stop_all(self, timeout: float = 30.0) -> None:
        with self._lock:
            running = list(self._running.values())
        for _, stop in running:
            stop.set()
        for thread, _ in running:
            thread.join(timeout)
