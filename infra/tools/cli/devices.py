"""herald devices: device-token housekeeping."""
from __future__ import annotations

import psycopg
import typer
from rich.console import Console

from infra.settings import Settings
from infra.tools.cli.errors import CliError

app = typer.Typer(help="Device tokens (push).", no_args_is_help=True)


@app.command()
def cleanup(days: int = typer.Option(30, min=1, help="remove devices deactivated or not seen for this many days")) -> None:
    """Delete device tokens inactive for DAYS days (deactivated by FCM UNREGISTERED / repeated failures, or never seen since)."""
    from streams.stores.devices import cleanup_inactive_devices

    try:
        with psycopg.connect(Settings().dsn, autocommit=True) as conn:
            n = cleanup_inactive_devices(conn, days)
    except psycopg.OperationalError as exc:
        raise CliError(f"PostgreSQL unreachable ({exc}); start the stack with `herald stack up`") from exc
    Console().print(f"removed {n} device(s) inactive for {days} days")
