"""Where a campaign's recipients come from: a file (ids, CSV or JSON lines) or a PostgreSQL query.

A source yields ``Recipient``s in the same order every time it is read, which
is what lets ``--resume`` skip the ones already produced. A file is read
twice (once to count, once to send); a query is wrapped in ``ORDER BY 1`` and
streamed through a server-side cursor.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from infra.db import one_row
from producers.lines import Rejected, json_objects


class SourceError(ValueError):
    """The recipient source cannot be read as a whole (missing file, no id column, bad query)."""


@dataclass(frozen=True, slots=True)
class Recipient:
    user_id: str
    variables: dict[str, str] | None = None  # per-recipient template variables, merged over the campaign's


ID_COLUMNS = ("user_id", "id")


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "ids"


def read_file(path: Path) -> Iterator[Recipient | Rejected]:
    """Recipients of a file, in file order; a line that names no recipient yields ``Rejected`` with its number.

    * ``*.csv``: a header with a ``user_id`` (or ``id``) column; other non-empty columns become variables;
    * ``*.jsonl``: one object a line with ``user_id`` (or ``id``) and an optional ``variables`` object;
    * anything else: one user id a line; blank lines and ``#`` comments are skipped.
    """
    if not path.is_file():
        raise SourceError(f"recipient file {path} does not exist")
    fmt = file_format(path)
    with path.open(newline="", encoding="utf-8") as f:
        if fmt == "csv":
            yield from _csv(f, path)
        elif fmt == "jsonl":
            yield from _jsonl(f)
        else:
            for n, line in enumerate(f, 1):
                uid = line.strip()
                if uid and not uid.startswith("#"):
                    yield Recipient(uid) if len(uid) <= 256 else Rejected(n, "user id longer than 256 characters")


def _csv(f, path: Path) -> Iterator[Recipient | Rejected]:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    id_col = next((header.index(c) for c in ID_COLUMNS if c in header), None)
    if id_col is None:
        raise SourceError(f"{path}: the CSV header needs a user_id (or id) column, found {', '.join(header)}")
    others = [(i, h) for i, h in enumerate(header) if i != id_col and h]
    for row in reader:
        n = reader.line_num
        if not row or not any(row):
            continue
        if len(row) <= id_col or not row[id_col].strip():
            yield Rejected(n, "no user id")
            continue
        variables = {h: row[i] for i, h in others if i < len(row) and row[i] != ""}
        yield Recipient(row[id_col].strip(), variables or None)


def _jsonl(f) -> Iterator[Recipient | Rejected]:
    for item in json_objects(f):
        if isinstance(item, Rejected):
            yield item
            continue
        n, obj = item
        uid = obj.get("user_id", obj.get("id"))
        if not isinstance(uid, (str, int)) or str(uid).strip() == "":
            yield Rejected(n, "no user_id")
            continue
        variables = obj.get("variables")
        if variables is not None and not isinstance(variables, dict):
            yield Rejected(n, "variables is not an object")
            continue
        yield Recipient(str(uid).strip(), dict(variables) if variables else None)


def _first_line(exc: Exception) -> str:
    """psycopg's message without the LINE/caret lines it adds: a CLI error stays one line."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def ordered_query(sql: str) -> str:
    """The campaign's query in a stable order (by its first column, the user id)."""
    body = sql.strip().rstrip(";")
    if not body.lower().startswith(("select", "with", "table", "values")):
        raise SourceError("--query must be a SELECT (its first column is the user id)")
    return f"SELECT * FROM ({body}) AS recipients ORDER BY 1"


def count_query(conn: psycopg.Connection, sql: str) -> int:
    try:
        return one_row(conn.execute(f"SELECT count(*) FROM ({ordered_query(sql)}) AS c").fetchone())[0]
    except psycopg.errors.Error as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise
        raise SourceError(f"the recipient query failed: {_first_line(exc)}") from exc


def read_query(conn: psycopg.Connection, sql: str, chunk: int = 10_000) -> Iterator[Recipient | Rejected]:
    """Rows of the query: first column the user id, an optional second column a JSON object of variables."""
    n = 0
    with conn.transaction():
        with conn.cursor(name="campaign_recipients") as cur:
            cur.itersize = chunk
            try:
                cur.execute(ordered_query(sql))
            except psycopg.errors.Error as exc:
                if isinstance(exc, psycopg.OperationalError):
                    raise
                raise SourceError(f"the recipient query failed: {_first_line(exc)}") from exc
            for row in cur:
                n += 1
                uid = row[0]
                if uid is None or str(uid).strip() == "":
                    yield Rejected(n, "no user id (NULL or empty first column)")
                    continue
                variables = row[1] if len(row) > 1 else None
                if isinstance(variables, str):
                    try:
                        variables = json.loads(variables)
                    except json.JSONDecodeError:
                        yield Rejected(n, "second column is not a JSON object")
                        continue
                if variables is not None and not isinstance(variables, dict):
                    yield Rejected(n, "second column is not a JSON object")
                    continue
                yield Recipient(str(uid), variables or None)
