"""``herald users import``: a million users in seconds through COPY into temp tables and set-based upserts.

One transaction: rows are validated in Python (``producers.users_rows``) and
streamed with COPY into temporary tables, then three statements upsert users,
devices and preferences (the last line wins when an id repeats). Running the
same file again changes nothing (rows whose values are unchanged are not
touched, so ``changed`` is 0). After the commit, the recipients cache of every
changed user is dropped so the route stage reads the new data at once.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from infra.db import one_row
from producers.users_rows import Rejected, UserRow, read_csv, read_jsonl

STAGE = """
CREATE TEMP TABLE import_users (line int, id text, present int, email text, phone text, locale text, time_zone text,
                                first_name text) ON COMMIT DROP;
CREATE TEMP TABLE import_devices (line int, user_id text, platform text, token text) ON COMMIT DROP;
CREATE TEMP TABLE import_prefs (line int, user_id text, muted boolean, channels jsonb, categories jsonb,
                                quiet_start time, quiet_end time) ON COMMIT DROP;
"""
COPY_USERS = "COPY import_users (line, id, present, email, phone, locale, time_zone, first_name) FROM STDIN"
COPY_DEVICES = "COPY import_devices (line, user_id, platform, token) FROM STDIN"
COPY_PREFS = "COPY import_prefs (line, user_id, muted, channels, categories, quiet_start, quiet_end) FROM STDIN"

LATEST = "CREATE TEMP TABLE latest_users ON COMMIT DROP AS SELECT DISTINCT ON (id) * FROM import_users ORDER BY id, line DESC"

# present bits: email 1, phone 2, locale 4, time_zone 8, first_name 16 (users_rows.FIELDS order)
INSERT_USERS = """
INSERT INTO users (id, email, phone, locale, time_zone, first_name)
SELECT id, email, phone, COALESCE(locale, 'en'), COALESCE(time_zone, 'UTC'), first_name FROM latest_users
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
UPDATE_USERS = """
UPDATE users u SET email = n.email, phone = n.phone, locale = n.locale, time_zone = n.time_zone, first_name = n.first_name,
       email_undeliverable = u.email_undeliverable AND n.email IS NOT DISTINCT FROM u.email,
       phone_undeliverable = u.phone_undeliverable AND n.phone IS NOT DISTINCT FROM u.phone,
       updated_at = now()
FROM (
    SELECT s.id,
           CASE WHEN s.present & 1 <> 0 THEN s.email ELSE x.email END AS email,
           CASE WHEN s.present & 2 <> 0 THEN s.phone ELSE x.phone END AS phone,
           CASE WHEN s.present & 4 <> 0 THEN COALESCE(s.locale, 'en') ELSE x.locale END AS locale,
           CASE WHEN s.present & 8 <> 0 THEN COALESCE(s.time_zone, 'UTC') ELSE x.time_zone END AS time_zone,
           CASE WHEN s.present & 16 <> 0 THEN s.first_name ELSE x.first_name END AS first_name
    FROM latest_users s JOIN users x ON x.id = s.id
) n
WHERE u.id = n.id
  AND (n.email, n.phone, n.locale, n.time_zone, n.first_name) IS DISTINCT FROM (u.email, u.phone, u.locale, u.time_zone, u.first_name)
RETURNING u.id
"""
# whose recipient changes through devices: owners of new, moved or re-platformed tokens, and the previous
# owner of a moved token (a token listed again for its owner changes nothing the route stage reads)
DEVICE_CHANGES = """
WITH s AS (SELECT DISTINCT ON (token) user_id, token, platform FROM import_devices ORDER BY token, line DESC)
SELECT s.user_id FROM s LEFT JOIN devices d ON d.token = s.token
WHERE d.token IS NULL OR d.user_id <> s.user_id OR d.platform <> s.platform
UNION
SELECT d.user_id FROM s JOIN devices d ON d.token = s.token WHERE d.user_id <> s.user_id
"""
UPSERT_DEVICES = """
INSERT INTO devices AS d (user_id, token, platform)
SELECT DISTINCT ON (token) user_id, token, platform FROM import_devices ORDER BY token, line DESC
ON CONFLICT (token) DO UPDATE SET
    last_seen_at = now(),
    platform = EXCLUDED.platform,
    -- the same owner keeps the device's state (a deactivated token stays off); a new owner starts fresh
    active = CASE WHEN d.user_id = EXCLUDED.user_id THEN d.active ELSE true END,
    temp_failures = CASE WHEN d.user_id = EXCLUDED.user_id THEN d.temp_failures ELSE 0 END,
    deactivated_at = CASE WHEN d.user_id = EXCLUDED.user_id THEN d.deactivated_at END,
    deactivated_reason = CASE WHEN d.user_id = EXCLUDED.user_id THEN d.deactivated_reason END,
    user_id = EXCLUDED.user_id
RETURNING d.user_id, (xmax = 0) AS inserted
"""
UPSERT_PREFS = """
INSERT INTO preferences AS p (user_id, muted, channels, categories, quiet_start, quiet_end)
SELECT DISTINCT ON (user_id) user_id, muted, channels, categories, quiet_start, quiet_end
FROM import_prefs ORDER BY user_id, line DESC
ON CONFLICT (user_id) DO UPDATE SET muted = EXCLUDED.muted, channels = EXCLUDED.channels,
    categories = EXCLUDED.categories, quiet_start = EXCLUDED.quiet_start, quiet_end = EXCLUDED.quiet_end, updated_at = now()
WHERE (p.muted, p.channels, p.categories, p.quiet_start, p.quiet_end)
      IS DISTINCT FROM (EXCLUDED.muted, EXCLUDED.channels, EXCLUDED.categories, EXCLUDED.quiet_start, EXCLUDED.quiet_end)
RETURNING p.user_id
"""


class ImportFormatError(ValueError):
    """The file as a whole cannot be read (unknown format, CSV without an id column)."""


@dataclass
class ImportReport:
    read: int = 0                    # data lines
    valid: int = 0
    rejected_count: int = 0
    rejected: list[Rejected] = field(default_factory=list)   # the first 1000, with line numbers
    repeated_ids: int = 0            # lines superseded by a later line with the same id
    inserted: int = 0
    updated: int = 0
    devices_new: int = 0
    devices_seen: int = 0
    preferences_changed: int = 0
    changed_users: set[str] = field(default_factory=set)

    @property
    def unchanged(self) -> int:
        return self.valid - self.repeated_ids - self.inserted - self.updated


def rows_of(path: Path, on_bytes: Callable[[int], None] | None = None, fmt: str | None = None) -> Iterator[UserRow | Rejected]:
    """Rows of a CSV or JSON-lines file; ``on_bytes(n)`` after each line read (for a progress bar)."""
    fmt = fmt or {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}.get(path.suffix.lower())
    if fmt not in ("csv", "jsonl"):
        raise ImportFormatError(f"{path.name}: give a .csv or .jsonl file (or --format csv|jsonl)")
    if not path.is_file():
        raise ImportFormatError(f"{path} does not exist")

    def lines() -> Iterator[str]:
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            for line in f:
                if on_bytes:
                    on_bytes(len(line))
                yield line

    try:
        yield from (read_csv(lines()) if fmt == "csv" else read_jsonl(lines()))
    except ValueError as exc:
        if isinstance(exc, ImportFormatError):
            raise
        raise ImportFormatError(f"{path.name}: {exc}") from exc


def import_users(conn: psycopg.Connection, rows: Iterable[UserRow | Rejected]) -> ImportReport:
    """Stage ``rows`` with COPY and upsert them in one transaction (``conn`` in autocommit mode)."""
    report = ImportReport()
    with conn.transaction():
        conn.execute(STAGE)
        with conn.cursor() as cur:
            devices: list[tuple] = []
            prefs: list[tuple] = []
            with cur.copy(COPY_USERS) as copy:
                for row in rows:
                    report.read += 1
                    if isinstance(row, Rejected):
                        report.rejected_count += 1
                        if len(report.rejected) < 1000:
                            report.rejected.append(row)
                        continue
                    report.valid += 1
                    copy.write_row((row.line, row.id, row.present, row.email, row.phone, row.locale, row.time_zone,
                                    row.first_name))
                    for platform, token in row.devices:
                        devices.append((row.line, row.id, platform, token))
                    if (p := row.prefs) is not None:
                        prefs.append((row.line, row.id, p.muted, json.dumps(p.channels), json.dumps(p.categories),
                                      p.quiet_start, p.quiet_end))
            if devices:
                with cur.copy(COPY_DEVICES) as copy:
                    for d in devices:
                        copy.write_row(d)
            if prefs:
                with cur.copy(COPY_PREFS) as copy:
                    for pref_row in prefs:
                        copy.write_row(pref_row)
        conn.execute(LATEST)
        distinct = one_row(conn.execute("SELECT count(*) FROM latest_users").fetchone())[0]
        report.repeated_ids = report.valid - distinct
        inserted = [r[0] for r in conn.execute(INSERT_USERS)]
        updated = [r[0] for r in conn.execute(UPDATE_USERS)]
        report.inserted, report.updated = len(inserted), len(updated)
        changed = set(inserted)
        changed.update(updated)
        if devices:
            changed.update(r[0] for r in conn.execute(DEVICE_CHANGES))
            for _uid, is_new in conn.execute(UPSERT_DEVICES):
                report.devices_seen += 1
                report.devices_new += bool(is_new)
        if prefs:
            pref_changed = [r[0] for r in conn.execute(UPSERT_PREFS)]
            report.preferences_changed = len(pref_changed)
            changed.update(pref_changed)
        report.changed_users = changed
    return report


def drop_cached_recipients(redis_url: str, keys: Iterable[str], chunk: int = 10_000) -> int:
    """UNLINK the recipients-cache keys, pipelined; returns how many were sent."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
    n = 0
    try:
        batch: list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) >= chunk:
                client.unlink(*batch)
                n += len(batch)
                batch = []
        if batch:
            client.unlink(*batch)
            n += len(batch)
    finally:
        client.close()
    return n
