"""herald schedules: recurring sends, a cron expression evaluated in each recipient's time zone."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from infra.settings import Settings
from infra.tools.cli.errors import CliError, json_object
from infra.tools.cli.output import print_rows

app = typer.Typer(help="Recurring sends: a cron expression evaluated in each recipient's time zone, sent by "
                       "`herald scheduler`.", no_args_is_help=True)


@contextmanager
def _connect() -> Iterator[psycopg.Connection]:
    try:
        conn = psycopg.connect(Settings().dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise CliError(f"PostgreSQL does not answer ({str(exc).strip()}); start it with `herald stack up`") from exc
    with conn:
        yield conn


@contextmanager
def _refusal() -> Iterator[None]:
    from scheduler.recurring import ScheduleError

    try:
        yield
    except ScheduleError as exc:
        raise CliError(str(exc)) from None


@app.command()
def create(
    schedule_id: str = typer.Argument(..., help="the schedule's id (letters, digits, '.', '_', '-')"),
    cron: str = typer.Option(..., "--cron", help="five fields in the recipient's local time: '0 9 * * 1' is Mondays 09:00"),
    template: str = typer.Option(..., "--template", help="template code"),
    channels: list[str] = typer.Option(["email"], "--channel", help="email, sms or push; repeat for several"),
    users: list[str] = typer.Option(..., "--user", help="a recipient's user id; repeat for several"),
    category: str = typer.Option("transactional", "--category", help="the notifications' category"),
    variables: str = typer.Option("{}", "--variables", help="template variables, a JSON object"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Create a recurring send: each recipient gets TEMPLATE whenever CRON matches on the recipient's own clock
    (users.time_zone; UTC without one).

    A local time skipped by a spring-forward change fires at the first valid instant after it (02:30 → 03:00); a
    local time that occurs twice in autumn fires once, at its first occurrence. `herald scheduler` sends each
    occurrence once.
    """
    from scheduler.recurring import create as create_schedule

    parsed = json_object(variables, "--variables")
    with _connect() as conn, _refusal():
        firsts = create_schedule(conn, schedule_id, cron, template, list(channels), list(users), category, parsed)
    if as_json:
        typer.echo(json.dumps({"id": schedule_id, "next": {u: at.isoformat() for u, at in firsts.items()}}))
        return
    soonest = min(firsts.values())
    Console(stderr=True).print(f"schedule {schedule_id}: {len(firsts)} recipient(s), the first occurrence "
                               f"{soonest:%Y-%m-%d %H:%M} UTC")


@app.command("list")
def list_schedules(as_json: bool = typer.Option(False, "--json", help="one JSON object per line instead of a table")) -> None:
    """The schedules: cron, template, status (active or paused), recipients, the next occurrence, occurrences sent."""
    from scheduler.recurring import list_schedules as rows

    with _connect() as conn:
        found = rows(conn)
    print_rows(found, as_json, record=lambda r: r.to_json(),
               table=Table("id", "cron", "template", "channels", "status", "recipients", "next (UTC)", "sent"),
               cells=lambda r: (r.id, r.cron, r.template, ",".join(r.channels), "paused" if r.paused else "active",
                                f"{r.recipients:,}", f"{r.next_at:%Y-%m-%d %H:%M}" if r.next_at else "-", f"{r.sent:,}"))


@app.command()
def pause(schedule_id: str = typer.Argument(..., help="the schedule's id")) -> None:
    """Stop sending until `herald schedules resume`; occurrences that fall due meanwhile are not sent later."""
    from scheduler.recurring import pause as pause_schedule

    with _connect() as conn, _refusal():
        pause_schedule(conn, schedule_id)
    Console(stderr=True).print(f"schedule {schedule_id} paused")


@app.command()
def resume(schedule_id: str = typer.Argument(..., help="the schedule's id")) -> None:
    """Send again, from each recipient's next occurrence after now."""
    from scheduler.recurring import resume as resume_schedule

    with _connect() as conn, _refusal():
        n = resume_schedule(conn, schedule_id)
    Console(stderr=True).print(f"schedule {schedule_id} resumed for {n} recipient(s)")


@app.command()
def delete(schedule_id: str = typer.Argument(..., help="the schedule's id")) -> None:
    """Delete the schedule and its recipients' next occurrences (what was already sent stays in the history)."""
    from scheduler.recurring import delete as delete_schedule

    with _connect() as conn, _refusal():
        delete_schedule(conn, schedule_id)
    Console(stderr=True).print(f"schedule {schedule_id} deleted")
