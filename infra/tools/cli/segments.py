"""herald segments: saved recipient queries that campaigns name (over HTTP too, where no SQL may travel)."""
from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from infra.tools.cli.apikeys import _connect
from infra.tools.cli.errors import CliError
from infra.tools.cli.output import print_rows

app = typer.Typer(help="Saved recipient queries: save one, list them, delete one. A campaign names one with "
                       "`herald campaign send --segment NAME` or POST /v1/campaigns {\"segment\": NAME}.",
                  no_args_is_help=True)


@app.command()
def save(
    name: str = typer.Argument(..., help="the segment's name, e.g. 'active-vienna'"),
    query: str = typer.Option(..., "--query", help="a SELECT whose first column is the user id (optional second "
                                                   "column: a JSON object of the recipient's variables)"),
    description: str = typer.Option(None, "--description", help="what the segment holds, for the next person"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object"),
) -> None:
    """Save (or replace) a segment; its query is run once now to count it, so a broken one is refused here."""
    from producers.campaign_source import SourceError
    from producers.segments import save as save_segment

    with _connect() as conn:
        try:
            total = save_segment(conn, name, query, description)
        except SourceError as exc:
            raise CliError(str(exc)) from exc
    if as_json:
        print(json.dumps({"name": name, "recipients": total}))
    else:
        Console().print(f"✓ segment {name}: {total:,} recipient(s) now")


@app.command("list")
def list_segments(as_json: bool = typer.Option(False, "--json", help="JSON lines, one segment a line")) -> None:
    """The saved segments with their queries."""
    from producers.segments import all_segments

    with _connect() as conn:
        found = all_segments(conn)
    print_rows(found, as_json,
               record=lambda s: {"name": s.name, "query": s.query, "description": s.description,
                                 "updated_at": s.updated_at.isoformat()},
               table=Table("name", "query", "description", "updated"),
               cells=lambda s: (s.name, s.query, s.description or "", s.updated_at.strftime("%Y-%m-%d %H:%M")))


@app.command()
def delete(name: str = typer.Argument(..., help="the segment to delete")) -> None:
    """Delete a segment (campaigns already started keep their copy of its query)."""
    from producers.segments import delete as delete_segment

    with _connect() as conn:
        if not delete_segment(conn, name):
            raise CliError(f"no segment {name!r}; `herald segments list` shows them")
    Console().print(f"✓ segment {name} deleted")
