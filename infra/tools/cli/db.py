"""herald db migrate"""
from __future__ import annotations

import psycopg
import typer
from rich.console import Console

from infra.db import migrate as run_migrations
from infra.settings import Settings
from infra.tools.cli.errors import CliError

app = typer.Typer(help="PostgreSQL schema: users, devices, preferences, templates, notifications, ledger, scheduled rows, campaigns.",
                  no_args_is_help=True)
console = Console()


@app.command()
def migrate() -> None:
    """Apply the SQL migrations that are not applied yet (running it twice is harmless)."""
    try:
        applied = run_migrations(Settings())
    except psycopg.OperationalError as exc:
        raise CliError(f"PostgreSQL does not answer ({exc}); start it with `herald stack up` or check HERALD_DATABASE_URL") from exc
    console.print(f"[green]✓[/] {len(applied)} migration(s) applied" + (f": {', '.join(applied)}" if applied else " (up to date)"))
