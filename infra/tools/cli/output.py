"""How every `herald ... list` prints its rows: with --json one JSON object per line (what scripts read), else a rich table."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from rich.console import Console, RenderableType
from rich.table import Table

Row = TypeVar("Row")


def print_rows(rows: Iterable[Row], as_json: bool, *, record: Callable[[Row], Mapping[str, Any]], table: Table,
               cells: Callable[[Row], Sequence[RenderableType | None]], style: Callable[[Row], str | None] | None = None,
               sort_keys: bool = False, console: Console | None = None) -> None:
    """``record(row)`` as one JSON line each with ``as_json``; else ``cells(row)`` as the rows of ``table`` (its
    columns and title set by the caller), each with ``style(row)`` if given, printed on ``console`` (a new one on stdout
    by default)."""
    if as_json:
        for row in rows:
            print(json.dumps(record(row), sort_keys=sort_keys))
        return
    for row in rows:
        table.add_row(*cells(row), style=style(row) if style else None)
    (console or Console()).print(table)
