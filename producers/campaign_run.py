"""A campaign from start to produced, shared by ``herald campaign send`` and ``POST /v1/campaigns``.

``prepare`` is pre-flight (nothing recorded, nothing produced); ``run`` records
the campaign and produces it, keeping ``campaigns.produced`` up to date, and
leaves the row ``produced``, ``interrupted`` or ``canceled``. The CLI runs it in
the foreground with a progress bar, the API in a background thread.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
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


def run(settings: Settings, conn: psycopg.Connection, spec: cp.CampaignSpec, total: int, *, skip: int = 0,
        procs: int = 1, chunk_size: int = 20_000, on_progress: Callable[[int], None] | None = None,
        stop: threading.Event | None = None) -> cp.ProduceReport:
    """Produce the campaign (already recorded) after its first ``skip`` recipients and record how far it got.

    ``stop`` (the API's cancel) ends production after the chunk in hand; the
    row is then left ``canceled``.
    """
    def progress(produced: int) -> None:
        cp.set_progress(conn, spec.id, produced)
        if on_progress:
            on_progress(produced)

    try:
        report = cp.produce(settings, settings.topic("bulk"), spec, recipients(settings, spec), skip=skip, procs=procs,
                            chunk_size=chunk_size, on_progress=progress, stop=stop)
    except SourceError as exc:
        cp.set_progress(conn, spec.id, skip, "interrupted", str(exc))
        raise
    if report.errors:
        cp.set_progress(conn, spec.id, report.produced, "interrupted", "; ".join(report.errors))
    elif stop is not None and stop.is_set():
        cp.set_progress(conn, spec.id, report.produced, "canceled", "canceled")
    elif report.interrupted:
        cp.set_progress(conn, spec.id, report.produced, "interrupted", "stopped by the user")
    else:
        cp.set_progress(conn, spec.id, report.produced, "produced", None, total=max(total, report.produced))
    return report
