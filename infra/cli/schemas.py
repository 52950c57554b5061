"""herald schemas list | check"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from infra.cli.errors import CliError
from schemas.catalog import CatalogError, load_catalog
from schemas.compat import check_catalog

app = typer.Typer(help="The Avro catalog: every version of every record, identified by its CRC-64-AVRO fingerprint.", no_args_is_help=True)
console = Console()

_ROOT = typer.Option(None, "--root", help="a folder of .avsc files (default: the packaged catalog)")


@app.command("list")
def list_(root: Path | None = _ROOT) -> None:
    """List every schema version with its fingerprint."""
    try:
        catalog = load_catalog(root)
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    table = Table("name", "version", "fullname", "fingerprint", "file")
    for name in catalog.names():
        for v in catalog.versions[name]:
            table.add_row(name, str(v.version), v.fullname, v.fingerprint_hex, v.path)
    console.print(table)


@app.command()
def check(root: Path | None = _ROOT) -> None:
    """Verify that each schema's newest version can read data written with every older version."""
    try:
        report = check_catalog(load_catalog(root))
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    bad = 0
    for name, problems in sorted(report.items()):
        if problems:
            bad += 1
            for p in problems:
                console.print(f"[red]✗[/] {name}: {p}")
        else:
            console.print(f"[green]✓[/] {name}")
    if bad:
        raise CliError(f"{bad} schema(s) not backward compatible: give new fields defaults, keep enum symbols")
