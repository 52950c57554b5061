"""PostgreSQL connections and the migration runner."""
from __future__ import annotations

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
