"""herald users import"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from infra.settings import Settings
from infra.tools.cli.errors import CliError

app = typer.Typer(help="Recipients in bulk: users with addresses, locale, time zone, devices and preferences.",
                  no_args_is_help=True)


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="a .csv or .jsonl file"),
    fmt: str = typer.Option(None, "--format", help="csv or jsonl (default: from the file name)"),
    rejects: Path = typer.Option(None, "--rejects", help="write every rejected line number and reason to this file"),
    show: int = typer.Option(20, help="rejected lines to print"),
) -> None:
    """Load users (id, email, phone, locale, time_zone, first_name, devices, preferences) from CSV or JSON lines.

    COPY into temporary tables and one upsert per table: a million users in
    well under a minute. Rejected rows are reported with line number and
    reason; the rest is imported. Safe to run again: unchanged rows are not
    touched, and the recipients cache of every changed user is dropped.

    CSV: a header with id (or user_id) and any of email, phone, locale,
    time_zone, first_name, devices ("android:TOKEN ios:TOKEN"), preferences
    (JSON). JSON lines: the same keys, devices as [{"platform", "token"}],
    preferences as {"muted", "channels", "categories", "quiet_start", "quiet_end"}.
    """
    import psycopg

    from producers.users_import import ImportFormatError, drop_cached_recipients, import_users, rows_of
    from producers.users_rows import Rejected
    from streams.stores.recipients import recipient_key

    if fmt not in (None, "csv", "jsonl"):
        raise CliError("--format is csv or jsonl")
    if not file.is_file():
        raise CliError(f"{file} does not exist")
    settings = Settings()
    err = Console(stderr=True)
    try:
        conn = psycopg.connect(settings.dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise CliError(f"PostgreSQL does not answer ({str(exc).strip()}); start it with `herald stack up`") from exc
    out = rejects.open("w", encoding="utf-8") if rejects else None
    t0 = time.perf_counter()
    try:
        with Progress(TextColumn(f"[bold]{file.name}"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[rows]}"),
                      TimeRemainingColumn(), console=err) as bar:
            task = bar.add_task("read", total=file.stat().st_size, rows="")
            seen = [0, 0]

            def on_bytes(n: int) -> None:
                seen[0] += n
                seen[1] += 1
                if seen[1] % 20_000 == 0:
                    bar.update(task, completed=seen[0], rows=f"{seen[1]:,} lines")

            def rows() -> Iterator:
                for r in rows_of(file, on_bytes, fmt):
                    if out is not None and isinstance(r, Rejected):
                        out.write(f"{r.line}\t{r.reason}\n")
                    yield r
                bar.update(task, completed=seen[0], rows=f"{seen[1]:,} lines; upserting…")

            report = import_users(conn, rows())
            bar.update(task, completed=file.stat().st_size, rows=f"{seen[1]:,} lines")
    except ImportFormatError as exc:
        raise CliError(str(exc)) from exc
    finally:
        if out is not None:
            out.close()
    seconds = time.perf_counter() - t0
    for r in report.rejected[:show]:
        err.print(f"[yellow]line {r.line}:[/] {r.reason}")
    if report.rejected_count > show:
        err.print(f"[yellow]… {report.rejected_count - show:,} more rejected lines[/]"
                  + (f" (all in {rejects})" if rejects else " (--rejects FILE lists them all)"))
    dropped = ""
    if report.changed_users:
        try:
            drop_cached_recipients(settings.redis_dsn, (recipient_key(settings, u) for u in report.changed_users))
        except Exception as exc:  # noqa: BLE001 - the import is committed; the cache expires on its own
            dropped = (f"; [yellow]could not drop cached recipients ({exc}): changes reach the route stage within "
                       f"{settings.recipient_cache_ttl}s[/]")
    err.print(
        f"{report.valid:,} valid rows in {seconds:.1f}s ({report.valid / seconds if seconds else 0:,.0f}/s): "
        f"{report.inserted:,} new, {report.updated:,} updated, {report.unchanged:,} unchanged; "
        f"devices {report.devices_seen:,} ({report.devices_new:,} new); preferences changed {report.preferences_changed:,}; "
        f"{report.rejected_count:,} rejected" + (f"; {report.repeated_ids:,} repeated ids (the last line wins)" if report.repeated_ids else "")
        + dropped
    )
