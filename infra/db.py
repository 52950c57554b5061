"""PostgreSQL connections and the migration runner."""
from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from infra.settings import Settings

_LOCK_ID = 0x4E52_414C_44  # advisory lock: two migrators never interleave


def one_row(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """``fetchone()`` of a query that always returns a row (an aggregate, an upsert's RETURNING)."""
    if row is None:
        raise RuntimeError("the query returned no row")
    return row


# Packed columns: a batch statement's column of n values as one string, split by PostgreSQL's
# ``string_to_array(text, delimiter, null_string)``. psycopg dumps a ``text[]`` parameter element by element in Python
# (about 0.25 µs an element, client side); a join is one C call, and PostgreSQL splits a string faster than it
# receives an array. A text column's delimiter and null marker are parameters too: control characters first, and
# random ones of 17 characters for a column whose values hold those (event data is anybody's), checked by counting.
# The string starts with its delimiter and the SQL drops the first element: ``string_to_array('')`` is ``{}``, and
# one empty string must stay ``{""}``.
SEP, NULL = "\x1f", "\x1e"


def packed(name: str) -> str:
    """The SQL of packed text column ``name`` (its parameters come from ``pack``): a ``text[]``."""
    return f"(string_to_array(%({name})s, %({name}_sep)s, %({name}_null)s))[2:]"


def packed_ints(name: str) -> str:
    """The SQL of packed integer column ``name`` (its parameter comes from ``pack_ints``): a ``bigint[]``."""
    return f"string_to_array(%({name})s, chr(31))::bigint[]"


def pack(name: str, values: Sequence[str | None]) -> dict[str, str]:
    """The parameters of packed text column ``name`` holding ``values`` (None: SQL NULL)."""
    nulls = values.count(None)
    sep, null = SEP, NULL
    for _ in range(100):
        text = sep.join(values if not nulls else [null if v is None else v for v in values])  # type: ignore[arg-type]
        # no value holds a delimiter or a null marker: each count is exactly what the join put there
        if text.count(sep) == max(len(values) - 1, 0) and text.count(null) == nulls:
            return {name: sep + text if values else "", f"{name}_sep": sep, f"{name}_null": null}
        sep, null = SEP + secrets.token_hex(8), NULL + secrets.token_hex(8)
    raise RuntimeError("no delimiter free of the values after 100 random draws")   # 2^-64 each


def pack_all(columns: dict[str, Sequence[str | None]]) -> dict[str, str]:
    """The parameters of several packed text columns, by name."""
    params: dict[str, str] = {}
    for name, values in columns.items():
        params.update(pack(name, values))
    return params


def pack_ints(values: Iterable[int]) -> str:
    """The parameter of a packed integer column."""
    return SEP.join(map(str, values))


def connect(settings: Settings, **kw) -> psycopg.Connection:
    return psycopg.connect(settings.dsn, **kw)


def pool(settings: Settings, min_size: int = 1, max_size: int = 4) -> ConnectionPool:
    return ConnectionPool(settings.dsn, min_size=min_size, max_size=max_size, open=True)


async def async_pool(settings: Settings, min_size: int = 1, max_size: int = 4) -> AsyncConnectionPool:
    p = AsyncConnectionPool(settings.dsn, min_size=min_size, max_size=max_size, open=False)
    await p.open()
    return p


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("infra") / "migrations"
    files = sorted((f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql"))
    return files


def migrate(settings: Settings) -> list[str]:
    """Apply pending migrations in order; returns the names applied. Running it twice is harmless."""
    applied_now: list[str] = []
    with connect(settings, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for name, sql in migration_files():
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                applied_now.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now
