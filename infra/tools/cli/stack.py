"""herald stack up | down | status"""
from __future__ import annotations

import os
import time

import typer
from rich.console import Console
from rich.table import Table

from infra.tools.cli.errors import CliError
from infra.settings import Settings
from infra.tools.stack import components, stack_status
from infra.topics import ensure_topics

app = typer.Typer(help="Start, stop and inspect the local Kafka (KRaft), PostgreSQL and Redis on loopback.", no_args_is_help=True)
console = Console()


def bring_up(settings: Settings, quiet: bool = False) -> None:
    """Start what does not answer yet, then create Herald's topics. Harmless when all runs."""
    if settings.stack == "containers":
        from infra.tools.stack.containers import up_containers

        env = up_containers(settings)
        for k, v in env.items():
            console.print(f"export {k}={v}")
        return
    for name, comp in components(settings):
        t0 = time.monotonic()
        try:
            result = comp.up()
        except RuntimeError as exc:
            raise CliError(f"{name}: {exc}") from exc
        if not quiet:
            console.print(f"[green]✓[/] {name:<11} {comp.address:<28} {result} ({time.monotonic() - t0:.1f}s)")
    created = ensure_topics(settings)
    if not quiet:
        console.print(f"[green]✓[/] topics      {len(created)} created, prefix '{settings.topic_prefix}.'")


@app.command()
def up() -> None:
    """Start Kafka, PostgreSQL and Redis (each only if it does not answer) and create Herald's topics.

    Kafka's jars come from Maven Central once and are cached under HERALD_HOME;
    PostgreSQL and Redis come from Debian's packages when missing. With
    HERALD_STACK=containers and a Docker engine, testcontainers starts them instead.
    """
    bring_up(Settings())


@app.command()
def down() -> None:
    """Stop the components that `herald stack up` started (servers it found running are left alone)."""
    settings = Settings()
    for name, comp in reversed(components(settings)):
        console.print(f"{name:<11} {comp.down()}")


@app.command()
def status() -> None:
    """Print each component, its address and whether it answers; exit 1 if one does not."""
    settings = Settings()
    table = Table("component", "address", "answers")
    rows = stack_status(settings)
    for row in rows:
        table.add_row(row.name, row.address, "[green]yes[/]" if row.answers else "[red]no[/]")
    console.print(table)
    if not all(r.answers for r in rows):
        raise typer.Exit(1)


def env_no_proxy() -> None:
    """With a proxy in the environment the SDKs would route loopback through it."""
    for var in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(var, "")
        if "127.0.0.1" not in current:
            os.environ[var] = ",".join(filter(None, [current, "127.0.0.1", "localhost"]))
