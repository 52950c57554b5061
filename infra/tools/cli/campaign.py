"""herald campaign send | status | list"""
from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from infra.settings import Settings
from infra.tools.cli.errors import CliError
from infra.tools.cli.kafka import require_broker
from infra.tools.cli.output import print_rows

app = typer.Typer(help="Million-user campaigns: push CampaignMessages to the bulk lane and follow their delivery.",
                  no_args_is_help=True)


def _connect(settings: Settings):
    import psycopg

    try:
        return psycopg.connect(settings.dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise CliError(f"PostgreSQL does not answer ({str(exc).strip()}); start it with `herald stack up`") from exc


def _parse_vars(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs:
        k, eq, v = p.partition("=")
        if not eq or not k:
            raise CliError(f"--var {p!r}: write it as name=value")
        out[k] = v
    return out


@app.command()
def send(
    template: str = typer.Option(None, "--template", "-t", help="template code (a new campaign)"),
    users: Path = typer.Option(None, "--users", help="recipients: one user id a line, a CSV with a user_id column, or JSON lines"),
    query: str = typer.Option(None, "--query", help="recipients: a SELECT whose first column is the user id (optional second: JSON variables)"),
    segment: str = typer.Option(None, "--segment", help="recipients: a saved query (`herald segments save`)"),
    channel: list[str] = typer.Option(["email"], "--channel", "-c", help="channels (repeatable)"),
    category: str = typer.Option("marketing", help="category the preferences check (users can mute marketing)"),
    var: list[str] = typer.Option([], "--var", help="campaign-wide template variable name=value (repeatable)"),
    campaign_id: str = typer.Option(None, "--id", help="campaign id (default: generated)"),
    resume: str = typer.Option(None, "--resume", help="continue an interrupted campaign by id; sends only what is left"),
    dry_run: bool = typer.Option(False, "--dry-run", help="pre-flight only: check the template for every locale, render a "
                                 "sample, count the recipients, estimate the duration; record and produce nothing"),
    as_json: bool = typer.Option(False, "--json", help="print the pre-flight (and the campaign id) as one JSON object"),
    procs: int = typer.Option(1, min=1, max=32, help="producer processes (one reaches ~240k events/s on 2 cores; more help only with spare cores)"),
    chunk_size: int = typer.Option(20_000, min=1, help="recipients per acknowledged chunk"),
    rate: int = typer.Option(None, "--rate", min=1, help="at most this many messages (recipient x channel) a minute: "
                             "production is paced (one producer process)"),
    window: str = typer.Option(None, "--window", help="send window in each recipient's time zone, HH:MM-HH:MM (e.g. "
                               "09:00-18:00, may span midnight): a recipient outside it waits for it, never dropped"),
) -> None:
    """Send a campaign: its recipients in CampaignChunk records to the bulk topic, as fast as the producer goes
    (or at `--rate` messages a minute).

    Pre-flight runs first and stops a campaign that would fail: the template
    must have an active version for every channel and every locale the
    recipients use (with the locale fallback chain), and a sample of
    recipients must render (a missing variable is named). It prints the
    recipient count and an estimate of the delivery time; `--dry-run` stops
    there.

    The campaign is recorded (total, produced) as it goes. Ctrl-C stops it
    after the acknowledged part; `--resume ID` continues where it stopped.
    Re-sent messages carry the same event id (campaign_id:user_id), so
    nobody gets the campaign twice. `herald campaign cancel ID` stops it.

    `--window 09:00-18:00`: a recipient whose local time (the user's time
    zone) is outside the window is rendered and held in the scheduler until
    the window opens (status deferred, reason send_window).
    """
    from infra.topics import ensure_topics
    from producers import campaign as cp, campaign_run as run
    from producers.campaign_preflight import PreflightError
    from producers.campaign_source import SourceError, count_query, read_file

    settings = Settings()
    err = Console(stderr=True)
    if not dry_run:
        require_broker(settings)   # before a campaign is recorded: without a broker nothing could be produced
    conn = _connect(settings)
    if resume:
        if template or users or query or segment or campaign_id or dry_run or rate or window:
            raise CliError("--resume takes the template, recipients, rate and window recorded with the campaign; drop the other options")
        row = cp.load(conn, resume)
        if row is None:
            raise CliError(f"no campaign {resume}; `herald campaign list` shows the campaigns")
        if row.status == "produced":
            err.print(f"campaign {resume} was produced completely ({row.produced:,} messages); nothing to resume")
            return
        if row.status == "canceled":
            raise CliError(f"campaign {resume} was canceled; start a new one")
        spec, skip = row.spec, row.produced
        try:
            if "file" in spec.source:
                total = sum(1 for r in read_file(Path(spec.source["file"])) if isinstance(r, cp.Recipient))
            else:
                total = count_query(conn, spec.source["query"])
        except SourceError as exc:
            raise CliError(str(exc)) from exc
    else:
        if not template:
            raise CliError("--template is needed for a new campaign (or --resume ID to continue one)")
        if sum(map(bool, (users, query, segment))) != 1:
            raise CliError("give exactly one recipient source: --users FILE, --query SQL or --segment NAME")
        if segment:
            from producers.segments import query_of

            saved = query_of(conn, segment)
            if saved is None:
                raise CliError(f"no segment {segment!r}; `herald segments list` shows them")
            query = saved
        source = {"file": str(users.resolve())} if users else {"query": query}
        try:
            spec = cp.CampaignSpec(campaign_id or cp.new_campaign_id(), template, source, tuple(channel), category,
                                   _parse_vars(var), rate, window)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        skip = 0
        try:
            pf = run.prepare(settings, conn, spec)
        except (PreflightError, SourceError) as exc:
            raise CliError(f"pre-flight: {exc}") from exc
        total = pf.total
        for rej in pf.rejected[:20]:
            err.print(f"[yellow]line {rej.line}:[/] {rej.reason}")
        if pf.rejected_count > 20:
            err.print(f"[yellow]… {pf.rejected_count - 20} more rejected lines[/]")
        err.print(f"pre-flight ok: {pf.summary()}")
        if dry_run:
            if as_json:
                typer.echo(json.dumps({"id": spec.id, "dry_run": True, **pf.as_dict()}))
            else:
                err.print("dry run: nothing recorded, nothing produced")
            return
    if not resume:
        try:
            cp.create(conn, spec, total)
        except cp.CampaignError as exc:
            raise CliError(str(exc)) from exc
    ensure_topics(settings)
    err.print(f"campaign [bold]{spec.id}[/]: template {spec.template}, {total:,} recipients"
              + (f", {skip:,} already produced" if skip else ""))

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task(spec.id, total=total, completed=skip, rate="")
        started = [skip, time.perf_counter()]

        def progress(produced: int) -> None:
            elapsed = time.perf_counter() - started[1]
            bar.update(task, completed=produced, rate=f"{(produced - started[0]) / elapsed:,.0f}/s" if elapsed else "")

        try:
            report = run.run(settings, conn, spec, total, skip=skip, procs=procs, chunk_size=chunk_size,
                             on_progress=progress)
        except SourceError as exc:
            raise CliError(f"{exc}; fix the source, then `herald campaign send --resume {spec.id}`") from exc

    total = max(total, report.produced)
    if resume:
        for rej in report.rejected[:20]:
            err.print(f"[yellow]line {rej.line}:[/] {rej.reason}")
    err.print(f"produced {report.produced:,} of {total:,} ({report.sent_now:,} now, {report.rate:,.0f} events/s)"
              + (f"; {report.rejected_count:,} lines rejected" if report.rejected_count else ""))
    if report.errors:
        raise CliError(f"the broker did not take a chunk ({report.errors[0]}); continue with `herald campaign send --resume {spec.id}`")
    if report.interrupted:
        err.print(f"interrupted; continue with `herald campaign send --resume {spec.id}`")
        raise typer.Exit(130)
    if as_json:
        typer.echo(json.dumps({"id": spec.id, "produced": report.produced, "total": total}))
    else:
        typer.echo(spec.id)


@app.command()
def status(
    campaign_id: str = typer.Argument(..., help="campaign id"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """How far a campaign has got: produced, sent, suppressed by reason, rate-limited, failed, dead-lettered."""
    from producers import campaign as cp
    from producers.campaign_status import fetch

    settings = Settings()
    conn = _connect(settings)
    row = cp.load(conn, campaign_id)
    if row is None:
        raise CliError(f"no campaign {campaign_id}; `herald campaign list` shows the campaigns")
    s = fetch(conn, campaign_id, row.total, row.produced)
    numbers = {
        "total": s.total, "produced": s.produced, "in_flight": s.in_flight, "sent": s.sent, "delivered": s.delivered,
        "opened": s.opened, "bounced": s.bounced, "suppressed": dict(s.suppressed), "rate_limited": s.rate_limited,
        "failed": s.failed, "dead_lettered": s.dead_lettered, "canceled": s.canceled, "pending": dict(s.pending),
        "progress": round(s.progress, 4),
    }
    if as_json:
        typer.echo(json.dumps({"id": campaign_id, "status": row.status, "template": row.spec.template, **numbers}))
        return
    table = Table(title=f"campaign {campaign_id} ({row.spec.template}, {', '.join(row.spec.channels)}): {row.status}")
    table.add_column("")
    table.add_column("count", justify="right")
    pct = f" ({100 * s.produced / s.total:.1f}%)" if s.total else ""
    table.add_row("recipients", f"{s.total:,}")
    table.add_row("produced", f"{s.produced:,}{pct}")
    table.add_row("not yet routed", f"{s.in_flight:,}")
    table.add_row("sent", f"{s.sent:,}")
    table.add_row("  delivered", f"{s.delivered:,}")
    table.add_row("  opened", f"{s.opened:,}")
    table.add_row("  bounced", f"{s.bounced:,}")
    table.add_row("suppressed", f"{s.suppressed_total:,}")
    for reason, n in sorted(s.suppressed.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("rate-limited", f"{s.rate_limited:,}")
    table.add_row("failed", f"{s.failed:,}")
    table.add_row("dead-lettered", f"{s.dead_lettered:,}")
    table.add_row("canceled", f"{s.canceled:,}")
    for st, n in sorted(s.pending.items()):
        table.add_row(f"{st}", f"{n:,}")
    if row.error:
        table.caption = f"last stop: {row.error}"
    Console().print(table)


@app.command()
def cancel(
    campaign_id: str = typer.Argument(..., help="campaign id"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Cancel a campaign: production stops, and whatever is not sent yet ends `canceled` and is never delivered.

    That includes deliveries waiting in the retry tiers or in the scheduler.
    The command returns once every worker has seen the cancel
    (HERALD_CAMPAIGN__CANCEL_CACHE_SECONDS); nothing is sent after that.
    Canceling twice is harmless.
    """
    from producers import campaign_run as run

    settings = Settings()
    with _connect(settings) as conn:
        at = run.cancel(conn, campaign_id)
    if at is None:
        raise CliError(f"no campaign {campaign_id}; `herald campaign list` shows the campaigns")
    run.wait_for_workers(settings, at)
    if as_json:
        typer.echo(json.dumps({"id": campaign_id, "canceled_at": at.isoformat()}))
    else:
        Console(stderr=True).print(f"campaign {campaign_id} canceled at {at:%Y-%m-%d %H:%M:%S}; "
                                   f"`herald campaign status {campaign_id}` shows what was sent before")


@app.command("list")
def list_campaigns(limit: int = typer.Option(20, min=1, help="newest first"),
                   as_json: bool = typer.Option(False, "--json", help="one JSON object per line instead of a table")) -> None:
    """The newest campaigns with their production progress."""
    settings = Settings()
    with _connect(settings) as conn:
        rows = conn.execute(
            "SELECT id, template, status, produced, total, created_at FROM campaigns ORDER BY created_at DESC LIMIT %s", (limit,)
        ).fetchall()
    print_rows(rows, as_json,
               record=lambda r: {"id": r[0], "template": r[1], "status": r[2], "produced": r[3], "total": r[4],
                                 "created": r[5].isoformat()},
               table=Table("id", "template", "status", "produced", "total", "created"),
               cells=lambda r: (r[0], r[1], r[2], f"{r[3]:,}", f"{r[4]:,}", f"{r[5]:%Y-%m-%d %H:%M}"))
