"""Retention: housekeeping deletes each table's rows older than its window, keeps the younger ones, in bounded batches."""
from __future__ import annotations

import pytest

from scheduler.housekeeping import purge
from scheduler.retention import Kept
from scheduler.service import Scheduler

pytestmark = pytest.mark.integration


def _rows(db, t: str) -> dict[str, list[str]]:
    q = {
        "dedup": "SELECT event_id FROM dedup WHERE event_id LIKE %s ORDER BY 1",
        "ledger": "SELECT delivery_id FROM deliveries WHERE delivery_id LIKE %s ORDER BY 1",
        "idempotency": "SELECT key FROM api_idempotency WHERE key LIKE %s ORDER BY 1",
        "status_history": "SELECT notification_id FROM status_history WHERE notification_id LIKE %s ORDER BY 1",
        "published": "SELECT convert_from(key, 'UTF8') FROM scheduled WHERE topic LIKE %s ORDER BY 1",
        "cancellations": "SELECT key FROM cancellations WHERE key LIKE %s ORDER BY 1",
        "digests": "SELECT digest_key FROM digest_windows WHERE digest_key LIKE %s ORDER BY 1",
        "digest_items": "SELECT event_id FROM digest_items WHERE digest_key LIKE %s ORDER BY 1",
    }
    return {k: [r[0].removeprefix(t + "-") for r in db.execute(sql, (t + "%",))] for k, sql in q.items()}


def test_housekeeping_purges_each_table_past_its_window_and_keeps_younger_rows(settings, db):
    t, r = settings.app_id, settings.retention
    assert (r.dedup_days, r.ledger_days, r.idempotency_days, r.status_history_days, r.published_days, r.canceled_days,
            r.cancellations_days, r.digests_days) == (7, 30, 2, 90, 7, 7, 30, 7)
    # each table: a row an hour past its window, one an hour short of it
    for name, days in (("old", "%s days 1 hour"), ("young", "%s days -1 hour")):
        def ago(d: int, days: str = days) -> str:
            return f"now() - interval '{days % d}'"
        db.execute(f"INSERT INTO dedup (event_id, channel, origin, created_at) VALUES (%s, 'email', 'x:0:0', {ago(7)})",
                   (f"{t}-{name}",))
        db.execute(f"""INSERT INTO deliveries (delivery_id, notification_id, channel, address, status, claimed_at, updated_at)
                       VALUES (%s, 'n', 'email', 'a@example.com', 'sent', {ago(31)}, {ago(30)})""", (f"{t}-{name}",))
        db.execute(f"""INSERT INTO api_idempotency (api_key_id, key, body_hash, notification_id, created_at)
                       VALUES (-1, %s, 'h', 'n', {ago(2)})""", (f"{t}-{name}",))
        db.execute(f"INSERT INTO status_history (notification_id, status, at) VALUES (%s, 'queued', {ago(90)})",
                   (f"{t}-{name}",))
        db.execute(f"""INSERT INTO scheduled (due_at, topic, key, value, published_at)
                       VALUES (now() - interval '100 days', %s, %s, 'v', {ago(7)})""", (f"{t}.events", f"{t}-{name}"))
        db.execute(f"""INSERT INTO scheduled (due_at, topic, key, value, canceled_at)
                       VALUES (now() - interval '100 days', %s, %s, 'v', {ago(7)})""", (f"{t}.events", f"{t}-{name}-canceled"))
        db.execute(f"INSERT INTO cancellations (kind, key, canceled_at) VALUES ('key', %s, {ago(30)})", (f"{t}-{name}",))
        db.execute(f"""WITH w AS (INSERT INTO digest_windows (digest_key, user_id, opened_at, closes_at, closed_at)
                                  VALUES (%s, 'u', {ago(8)}, {ago(7)}, {ago(7)}) RETURNING id)
                       INSERT INTO digest_items (digest_key, event_id, window_id, occurred_at, variables)
                       SELECT %s, %s, id, now(), '{{}}' FROM w""", (f"{t}-{name}", f"{t}-{name}", f"{t}-{name}"))
    db.execute("""INSERT INTO scheduled (due_at, topic, key, value) VALUES (now() - interval '100 days', %s, %s, 'v')""",
               (f"{t}.events", f"{t}-unpublished"))
    db.execute("INSERT INTO digest_windows (digest_key, user_id, opened_at, closes_at) "
               "VALUES (%s, 'u', now() - interval '100 days', now() - interval '99 days')", (f"{t}-open",))
    assert _rows(db, t)["dedup"] == ["old", "young"]

    sched = Scheduler(settings)
    try:
        done = sched.housekeeping()
    finally:
        sched.close()

    assert done is not None
    assert {f"purge_{k}" for k in Kept} <= set(done)
    assert all(done[f"purge_{k}"] >= 1 for k in Kept)
    assert _rows(db, t) == {"dedup": ["young"], "ledger": ["young"], "idempotency": ["young"],
                            "status_history": ["young"], "published": ["unpublished", "young", "young-canceled"],
                            "cancellations": ["young"], "digests": ["open", "young"], "digest_items": ["young"]}


def test_a_table_with_zero_days_is_kept_forever(settings, db):
    t = settings.app_id
    db.execute("INSERT INTO dedup (event_id, channel, origin, created_at) VALUES (%s, 'sms', 'x:0:0', now() - interval '3 years')",
               (f"{t}-ancient",))
    kept = settings.model_copy(update={"retention": settings.retention.model_copy(update={"dedup_days": 0})})
    sched = Scheduler(kept)
    try:
        done = sched.housekeeping()
    finally:
        sched.close()
    assert done is not None and "purge_dedup" not in done
    assert _rows(db, t)["dedup"] == ["ancient"]
    db.execute("DELETE FROM dedup WHERE event_id = %s", (f"{t}-ancient",))


def test_a_purge_deletes_oldest_first_in_bounded_batches(settings, db):
    t = settings.app_id
    # five claims far older than any other test's, so they are the oldest in the shared database
    for i in range(5):
        db.execute("""INSERT INTO dedup (event_id, channel, origin, created_at)
                      VALUES (%s, 'push', 'x:0:0', now() - make_interval(days => %s))""", (f"{t}-{i}", 4000 + i))
    statements: list[int] = []

    class Counting:
        def execute(self, sql: str, params: tuple) -> object:
            cur = db.execute(sql, params)
            statements.append(cur.rowcount)
            return cur

    job = purge(Kept.DEDUP, 7, batch_rows=2, max_batches=2)
    assert job(Counting()) == 4           # type: ignore[arg-type]
    assert statements == [2, 2]
    assert _rows(db, t)["dedup"] == ["0"]  # the youngest of the five waits for the next run
    assert job(db) >= 1
    assert _rows(db, t)["dedup"] == []
