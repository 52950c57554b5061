"""herald schemas list | check | register"""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from infra.tools.cli.errors import CliError
from infra.tools.cli.output import print_rows
from schemas.catalog import Catalog, CatalogError, load_version
from schemas.compat import check_catalog

app = typer.Typer(help="The Avro catalog: every version of every record, identified by its CRC-64-AVRO fingerprint.", no_args_is_help=True)
console = Console()

_ROOT = typer.Option(None, "--root", help="a folder of .avsc files, checked alone (default: the packaged catalog and "
                     "HERALD_SCHEMAS_DIR)")


def _catalog(root: Path | None) -> Catalog:
    """The catalog, or one line naming the file (or folder) that is wrong."""
    try:
        if root is None:
            from infra.schema_registry import catalog_for
            from infra.settings import Settings

            return catalog_for(Settings())  # the packaged catalog and HERALD_SCHEMAS_DIR
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
    print_rows(rows, as_json,
               record=lambda r: {"name": r[0], "version": r[1].version, "fullname": r[1].fullname,
                                 "fingerprint": r[1].fingerprint_hex, "file": r[1].path},
               table=Table("name", "version", "fullname", "fingerprint", "file"),
               cells=lambda r: (r[0], str(r[1].version), r[1].fullname, r[1].fingerprint_hex, r[1].path), console=console)


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


@app.command()
def register(
    strategy: str = typer.Option("record", help="subject names: record (RecordNameStrategy: the record's full name) or "
                                 "topic_record (TopicRecordNameStrategy: <events topic>-<full name>)"),
    level: str = typer.Option(None, "--compatibility", help="compatibility level set on each subject "
                              "(default HERALD_SCHEMA_REGISTRY__COMPATIBILITY)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line instead of a table"),
) -> None:
    """Publish Herald's catalog (packaged + HERALD_SCHEMAS_DIR) into the configured Schema Registry.

    Each record becomes a subject (its full name, what Confluent's RecordNameStrategy asks for) with its
    compatibility level set, and every version is registered in order; what is registered already keeps its id.
    Producers then write Confluent's framing with their own serializers (see the README's producer quickstart).
    """
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from infra.schema_registry import catalog_for, registry_client
    from infra.settings import Settings

    settings = Settings()
    if strategy not in ("record", "topic_record"):
        raise CliError(f"--strategy {strategy}: use record or topic_record")
    level = (level or settings.schema_registry.compatibility).upper()
    try:
        catalog = catalog_for(settings)
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    try:
        client = registry_client(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    url = settings.schema_registry.url
    rows = []
    try:
        for name in catalog.names():
            versions = catalog.versions[name]
            fullname = versions[-1].fullname
            subject = fullname if strategy == "record" else f"{settings.topic('events')}-{fullname}"
            client.set_compatibility(subject, level)
            for v in versions:
                sid = client.register_schema(subject, Schema(json.dumps(v.raw), "AVRO"))
                rows.append({"subject": subject, "version": v.version, "id": sid, "file": v.path, "compatibility": level})
    except SchemaRegistryError as exc:
        done = f" after {len(rows)} version(s)" if rows else ""
        if exc.http_status_code == 409:
            raise CliError(f"the registry at {url} refuses a version as incompatible{done}: {exc.error_message}") from exc
        raise CliError(f"the registry at {url} answered {exc.http_status_code} ({exc.error_code}: {exc.error_message}){done}; "
                       "check HERALD_SCHEMA_REGISTRY__URL and its credentials") from exc
    except Exception as exc:  # transport errors of the client (httpx): one line, not a traceback
        raise CliError(f"the schema registry at {url} does not answer ({exc!r}); check HERALD_SCHEMA_REGISTRY__URL") from exc
    print_rows(rows, as_json, record=lambda row: row,
               table=Table("subject", "version", "id", "compatibility", "file", title=f"registered in {url}"),
               cells=lambda row: (row["subject"], str(row["version"]), str(row["id"]), row["compatibility"], row["file"]),
               console=console)
