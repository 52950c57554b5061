"""herald dlq list | stats | show | replay"""
from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from infra.settings import Settings
from infra.tools.cli.errors import CliError
from infra.tools.cli.kafka import require_broker
from infra.tools.cli.output import print_rows

app = typer.Typer(
    help="Inspect and replay the dead-letter topic (reads it with a private consumer; commits nothing).",
    no_args_is_help=True,
)

SINCE = typer.Option(None, "--since", help="failed at or after: ISO time (UTC unless an offset is given) or an age (90m, 2h, 3d)")
UNTIL = typer.Option(None, "--until", help="failed before: ISO time or an age")
STAGE = typer.Option(None, "--stage", help="stage (decode, route, render, deliver, retry, status); repeatable")
ERROR = typer.Option(None, "--error-class", "--reason", help="error class / reason, e.g. no_route, not_avro; repeatable")
ORIGIN = typer.Option(None, "--origin-topic", help="topic the record failed on; repeatable")


def _selection(since: str | None, until: str | None, stage: list[str] | None, error_class: list[str] | None,
               origin_topic: list[str] | None, limit: int | None):
    from producers.dlq import Selection, parse_time

    if limit is not None and limit < 1:
        raise CliError("--limit must be at least 1")
    try:
        return Selection(
            since_ms=parse_time(since) if since else None,
            until_ms=parse_time(until) if until else None,
            stages=frozenset(stage or ()),
            error_classes=frozenset(error_class or ()),
            origin_topics=frozenset(origin_topic or ()),
            limit=limit,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _dlq_errors():
    from producers.dlq import DlqError

    return DlqError


@app.command("list")
def list_(
    since: str | None = SINCE, until: str | None = UNTIL, stage: list[str] | None = STAGE,
    error_class: list[str] | None = ERROR, origin_topic: list[str] | None = ORIGIN,
    limit: int = typer.Option(100, "--limit", help="show at most this many (oldest first)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line instead of a table"),
) -> None:
    """List dead letters, oldest first: where (partition:offset, for `show`), when, stage, reason, origin, error."""
    from producers.dlq import format_ms, scan

    settings = Settings()
    require_broker(settings)
    sel = _selection(since, until, stage, error_class, origin_topic, limit)
    try:
        entries = list(sel.apply(scan(settings)))
    except _dlq_errors() as exc:
        raise CliError(str(exc)) from exc
    table = Table(title=f"{settings.topic('dlq')}: {len(entries)} dead letter(s)" + (" (limit reached)" if len(entries) == limit else ""))
    for col in ("at", "failed at (UTC)", "stage", "reason", "origin", "tries", "replays", "error"):
        table.add_column(col, overflow="fold")
    print_rows(entries, as_json, record=lambda e: e.summary(), table=table,
               cells=lambda e: (e.coord, format_ms(e.failed_at_ms), e.stage, e.error_class, e.origin_topic or "-",
                                str(e.attempts), str(e.replays), e.error[:120]))


@app.command()
def stats(
    since: str | None = SINCE, until: str | None = UNTIL, stage: list[str] | None = STAGE,
    error_class: list[str] | None = ERROR, origin_topic: list[str] | None = ORIGIN,
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table"),
) -> None:
    """Count dead letters by stage and reason (filters as for `list`)."""
    from producers.dlq import counts, scan

    settings = Settings()
    require_broker(settings)
    sel = _selection(since, until, stage, error_class, origin_topic, None)
    try:
        c = counts(sel.apply(scan(settings)))
    except _dlq_errors() as exc:
        raise CliError(str(exc)) from exc
    rows = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))
    if as_json:
        print(json.dumps({"total": sum(c.values()), "by_reason": [{"stage": s, "reason": r, "count": n} for (s, r), n in rows]}))
        return
    table = Table(title=f"{settings.topic('dlq')}: {sum(c.values())} dead letter(s)")
    table.add_column("stage")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for (s, r), n in rows:
        table.add_row(s, r, str(n))
    Console().print(table)


@app.command()
def show(
    at: str = typer.Argument(..., help="PARTITION:OFFSET of the dead letter, as printed by `herald dlq list`"),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text"),
) -> None:
    """Show one dead letter: the why, every header readable, the key and the value decoded (Avro)."""
    from producers.dlq import fetch, format_ms

    try:
        partition, offset = (int(x) for x in at.split(":"))
    except ValueError:
        raise CliError(f"{at!r} is not PARTITION:OFFSET (e.g. 0:42, as `herald dlq list` prints)") from None
    settings = Settings()
    require_broker(settings)
    try:
        e = fetch(settings, partition, offset)
    except _dlq_errors() as exc:
        raise CliError(str(exc)) from exc
    headers, value = decoded(settings, e)
    out = {**e.summary(), "headers": headers, "value": value}
    if as_json:
        print(json.dumps(out, default=str))
        return
    con = Console()
    con.print(f"[bold]{settings.topic('dlq')} {e.coord}[/]  failed at {format_ms(e.failed_at_ms)} UTC "
              f"(first failure {format_ms(e.first_failure_ms)})")
    con.print(f"stage [bold]{e.stage}[/], reason [bold]{e.error_class}[/], attempts {e.attempts}, replays {e.replays}")
    con.print(f"origin {e.origin_topic} partition {e.summary()['origin_partition']} offset {e.summary()['origin_offset']}")
    con.print(f"error: {e.error}")
    con.print(f"key: {e.summary()['key']!r}")
    table = Table(title="headers")
    table.add_column("name")
    table.add_column("value", overflow="fold")
    for k, v in headers:
        table.add_row(k, v)
    con.print(table)
    con.print("value:")
    con.print_json(json.dumps(value, default=str))


def decoded(settings: Settings, e) -> tuple[list[tuple[str, str]], dict]:
    """A dead letter's headers as text (hex when not printable) and its value decoded (Avro), or why it is not.

    `herald dlq show` and the console's dead-letter page both show a record with this.
    """
    from infra.schema_registry import codec_for
    from schemas.codec import DecodeError
    from schemas.registry import RegistryUnavailable

    headers = [(k, v.decode("utf-8") if _printable(v) else "0x" + v.hex()) for k, v in e.headers if v is not None]
    try:
        d = codec_for(settings).decode(e.value)  # Confluent-framed letters too, when a registry is configured
        value: dict = {"schema": f"{d.name} v{d.version}", "record": d.record}
    except RegistryUnavailable as exc:
        value = {"undecodable": "registry_unavailable", "error": str(exc), "bytes": len(e.value or b"")}
    except DecodeError as exc:
        value = {"undecodable": exc.reason, "error": str(exc), "bytes": len(e.value or b""),
                 "preview": (e.value or b"")[:256].decode("utf-8", "replace")}
    return headers, value


def _printable(v: bytes) -> bool:
    try:
        return v.decode("utf-8").isprintable()
    except UnicodeDecodeError:
        return False


@app.command()
def replay(
    since: str | None = SINCE, until: str | None = UNTIL, stage: list[str] | None = STAGE,
    error_class: list[str] | None = ERROR, origin_topic: list[str] | None = ORIGIN,
    limit: int | None = typer.Option(None, "--limit", help="replay at most this many (oldest first)"),
    rate: float = typer.Option(100.0, "--rate", help="records a second, at most"),
    max_replays: int = typer.Option(3, "--max-replays", help="skip dead letters already replayed this many times"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be replayed; send nothing"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
) -> None:
    """Send a selection of dead letters back to their origin topics, at a bounded rate.

    The original key, value and headers go back unchanged, with the replay count
    (herald-dlq-replays) raised by one. A record that fails again lands in the DLQ
    again with its count; dead letters that were already replayed and failed again
    (superseded) or reached --max-replays are skipped. Deliveries pass the ledger,
    so a replay never sends twice what was sent.
    """
    from producers.dlq import prepare_replay, send

    if rate <= 0:
        raise CliError("--rate must be positive")
    if max_replays < 1:
        raise CliError("--max-replays must be at least 1")
    if limit is not None and limit < 1:
        raise CliError("--limit must be at least 1")
    settings = Settings()
    require_broker(settings)
    sel = _selection(since, until, stage, error_class, origin_topic, None)
    con = Console()
    try:
        plan = prepare_replay(settings, sel, max_replays, limit)
    except _dlq_errors() as exc:
        raise CliError(str(exc)) from exc

    by_target: dict[tuple[str, str, str], int] = {}
    for e, r in plan.records:
        by_target[(r.topic, e.stage, e.error_class)] = by_target.get((r.topic, e.stage, e.error_class), 0) + 1
    table = Table(title=("would replay" if dry_run else "replaying") + f" {len(plan.records)} dead letter(s)")
    for col in ("to topic", "stage", "reason", "count"):
        table.add_column(col)
    for (to_topic, from_stage, reason), n in sorted(by_target.items()):
        table.add_row(to_topic, from_stage, reason, str(n))
    con.print(table)
    for why, n in sorted(plan.skipped.items()):
        con.print(f"skipped {n}: {why}")
    if dry_run or not plan.records:
        con.print("dry run: nothing sent" if dry_run else "nothing to replay")
        return
    if not yes and not typer.confirm(f"send {len(plan.records)} record(s) at {rate:g}/s?"):
        raise CliError("aborted; nothing sent")

    with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=con) as bar:
        task = bar.add_task("replay", total=len(plan.records))
        result = send(settings, [r for _, r in plan.records], rate, lambda n: bar.advance(task, n))
    con.print(f"replayed {result.sent}, failed {result.failed}, skipped {sum(plan.skipped.values())}")
    for t, n in sorted(result.by_topic.items()):
        con.print(f"  → {t}: {n}")
    if result.failed:
        for err, n in result.errors.most_common(5):
            con.print(f"  [red]{n} × {err}[/]")
        raise CliError(f"{result.failed} record(s) were not replayed; they are still in the DLQ, run the same replay again")
