"""Segments: saved recipient queries (migration 019). A SELECT whose first column is the user id (an optional second
column a JSON object of variables), saved under a name by an operator and named by a campaign; the query is checked
when it is saved (it must run) and copied into the campaign when it starts."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import psycopg

from producers.campaign_source import SourceError, count_query

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    query: str
    description: str | None
    updated_at: datetime


def save(conn: psycopg.Connection, name: str, query: str, description: str | None = None) -> int:
    """Save (or replace) a segment after running its count; returns the count. Raises ``SourceError``."""
    if not NAME.match(name):
        raise SourceError(f"segment name {name[:40]!r}: letters, digits and _ . : - only, at most 100")
    total = count_query(conn, query)   # a query that does not run is refused now, not when a campaign starts
    conn.execute("INSERT INTO segments (name, query, description) VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
                 "SET query = EXCLUDED.query, description = EXCLUDED.description, updated_at = now()",
                 (name, query, description))
    return total


def query_of(conn: psycopg.Connection, name: str) -> str | None:
    row = conn.execute("SELECT query FROM segments WHERE name = %s", (name,)).fetchone()
    return row[0] if row else None


def all_segments(conn: psycopg.Connection) -> list[Segment]:
    rows = conn.execute("SELECT name, query, description, updated_at FROM segments ORDER BY name").fetchall()
    return [Segment(*row) for row in rows]


def delete(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("DELETE FROM segments WHERE name = %s", (name,)).rowcount > 0
