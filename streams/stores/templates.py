"""The active templates: read from the ``templates`` table, compiled once per version, cached per code.

``TemplateStore`` re-reads the active versions of a code at most every
``refresh_seconds``, so ``herald templates activate`` is picked up by running
workers without a restart. Where the rows come from is a ``TemplateRows``:
PostgreSQL (``PostgresTemplateRows``) or its in-memory twin (``MemoryTemplateRows``).
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

from psycopg_pool import AsyncConnectionPool

from streams.stores.batch import RoundTrips
from streams.templates import (
    CompiledTemplate,
    Environments,
    TemplateSource,
    compile_template,
    locale_chain,
)

ACTIVE_SQL = """
SELECT code, channel, locale, version, body_text, subject, body_html, push_title
FROM templates WHERE active AND code = ANY(%s)
"""


class TemplateRows(Protocol):
    async def active(self, codes: list[str]) -> list[TemplateSource]:
        """One statement: the active version of every channel and locale of ``codes``."""


class PostgresTemplateRows:
    def __init__(self, db: AsyncConnectionPool) -> None:
        self.db = db

    async def active(self, codes: list[str]) -> list[TemplateSource]:
        async with self.db.connection() as conn:
            rows = await (await conn.execute(ACTIVE_SQL, (codes,))).fetchall()
        return [TemplateSource(*r) for r in rows]


class MemoryTemplateRows:
    """The twin: the active sources by (code, channel, locale); ``add`` activates a version."""

    def __init__(self, sources: Iterable[TemplateSource] = (), trips: RoundTrips | None = None) -> None:
        self.sources: dict[tuple[str, str, str], TemplateSource] = {}
        self.trips = trips or RoundTrips()
        for src in sources:
            self.add(src)

    def add(self, src: TemplateSource) -> None:
        self.sources[(src.code, src.channel, src.locale)] = src

    async def active(self, codes: list[str]) -> list[TemplateSource]:
        self.trips.sql += 1
        wanted = set(codes)
        return [src for (code, _, _), src in self.sources.items() if code in wanted]


class TemplateStore:
    """Active templates by code, compiled once per version, refreshed per code every ``refresh_seconds``."""

    def __init__(self, refresh_seconds: float = 5.0, envs: Environments | None = None) -> None:
        self.refresh_seconds = refresh_seconds
        self.envs = envs or Environments()
        self._by_code: dict[str, dict[tuple[str, str], CompiledTemplate]] = {}
        self._loaded_at: dict[str, float] = {}
        self._compiled: dict[tuple[str, str, str, int], CompiledTemplate] = {}
        self.loads = 0  # SELECTs issued (tests and the benchmark read it)

    def stale(self, codes: set[str], now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return sorted(c for c in codes if now - self._loaded_at.get(c, -1e18) >= self.refresh_seconds)

    async def refresh(self, rows: TemplateRows, codes: set[str]) -> None:
        """One SELECT for every code not loaded recently (none when all are fresh)."""
        wanted = self.stale(codes)
        if not wanted:
            return
        sources = await rows.active(wanted)
        self.loads += 1
        self.load_rows(wanted, sources)

    def load_rows(self, codes: list[str], sources: list[TemplateSource]) -> None:
        now = time.monotonic()
        fresh: dict[str, dict[tuple[str, str], CompiledTemplate]] = {c: {} for c in codes}
        for src in sources:
            key = (src.code, src.channel, src.locale, src.version)
            compiled = self._compiled.get(key)
            if compiled is None or compiled.source != src:
                compiled = self._compiled[key] = compile_template(self.envs, src)
            fresh.setdefault(src.code, {})[(src.channel, src.locale)] = compiled
        for code in codes:
            self._by_code[code] = fresh[code]
            self._loaded_at[code] = now

    def pick(self, code: str, channel: str, locale: str | None) -> CompiledTemplate | None:
        """The active template for the first locale of the fallback chain that has one."""
        by_key = self._by_code.get(code) or {}
        for loc in locale_chain(locale):
            found = by_key.get((channel, loc))
            if found is not None:
                return found
        return None
