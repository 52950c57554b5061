"""herald schemas list | check"""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from infra.tools.cli.errors import CliError
from schemas.catalog import Catalog, CatalogError, load_catalog, load_version
from schemas.compat import check_catalog

app = typer.Typer(help="The Avro catalog: every version of every record, identified by its CRC-64-AVRO fingerprint.", no_args_is_help=True)
console = Console()

_ROOT = typer.Option(None, "--root", help="a folder of .avsc files (default: the packaged catalog)")


def _catalog(root: Path | None) -> Catalog:
    """The catalog, or one line naming the file (or folder) that is wrong."""
    try:
        if root is None:
            return load_catalog()
        if not root.is_dir():
            raise CliError(f"--root {root}: no such folder; give a folder of <Name>.v<N>.avsc files")
        files = sorted(root.rglob("*.avsc"))
        if not files:
            raise CliError(f"--root {root}: no .avsc files in it; give a folder of <Name>.v<N>.avsc files")
        versions = []
        for p in files:
            try:
                versions.append(load_version(str(p), p.read_text()))
            except CatalogError:
                raise
            except Exception as exc:
                raise CliError(f"{p}: not a valid Avro schema ({exc}); fix or remove the file") from exc
        return Catalog(versions)
    except CatalogError as exc:
        raise CliError(str(exc)) from exc


@app.command("list")
def list_(root: Path | None = _ROOT,
          as_json: bool = typer.Option(False, "--json", help="one JSON object per line instead of a table")) -> None:
    """List every schema version with its fingerprint."""
    catalog = _catalog(root)
    rows = [(name, v) for name in catalog.names() for v in catalog.versions[name]]
    if as_json:
        for name, v in rows:
            print(json.dumps({"name": name, "version": v.version, "fullname": v.fullname,
                              "fingerprint": v.fingerprint_hex, "file": v.path}))
        return
    table = Table("name", "version", "fullname", "fingerprint", "file")
    for name, v in rows:
        table.add_row(name, str(v.version), v.fullname, v.fingerprint_hex, v.path)
    console.print(table)


@app.command()
def check(root: Path | None = _ROOT) -> None:
    """Verify that each schema's newest version can read data written with every older version."""
    catalog = _catalog(root)
    try:
        report = check_catalog(catalog)
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
