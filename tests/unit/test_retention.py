"""Retention decisions without a database: bounded batches, which tables get a purge, the window of each."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.settings import RetentionConfig
from scheduler.housekeeping import retention_jobs
from scheduler.retention import TABLES, Kept, drain, purge_sql, window_days


def test_drain_stops_at_a_short_batch_and_never_runs_more_than_max_batches():
    left = [5]

    def delete_batch() -> int:
        n = min(2, left[0])
        left[0] -= n
        return n

    assert drain(delete_batch, 2, 10) == 5 and left == [0]   # 2, 2, 1: the short batch ends it
    left[0] = 100
    assert drain(delete_batch, 2, 3) == 6 and left == [94]   # the rest waits for the next run


def test_every_table_has_a_window_setting_and_zero_days_keeps_a_table_forever():
    r = RetentionConfig()
    assert {k: window_days(r, k) for k in Kept} == {
        Kept.DEDUP: 7, Kept.LEDGER: 30, Kept.IDEMPOTENCY: 2, Kept.STATUS_HISTORY: 90, Kept.PUBLISHED: 7,
        Kept.CANCELED: 7, Kept.CANCELLATIONS: 30, Kept.DIGESTS: 7}
    assert [j.__name__ for j in retention_jobs(r)] == [f"purge_{k}" for k in Kept]
    names = [j.__name__ for j in retention_jobs(RetentionConfig(dedup_days=0, ledger_days=0, status_history_days=0))]
    assert names == ["purge_idempotency", "purge_published", "purge_canceled", "purge_cancellations", "purge_digests"]
    assert "purge_published" not in [j.__name__ for j in retention_jobs(r, published_days=0)]


def test_a_purge_is_one_bounded_statement_that_checks_the_age_again_when_it_deletes():
    sql = purge_sql(TABLES[Kept.LEDGER])
    assert sql.count("LIMIT %s") == 1 and sql.count("updated_at < now() - make_interval(days => %s)") == 2
    assert "published_at IS NOT NULL" in purge_sql(TABLES[Kept.PUBLISHED]).split(") AND ")[-1]


@pytest.mark.parametrize("ledger, history", [(30, 29), (0, 90)])
def test_the_history_may_not_be_purged_before_the_ledger_that_reads_its_sends(ledger, history):
    # the bulk lane's sends are recorded by their sent-once history rows: purged first, a replay would send again
    with pytest.raises(ValidationError, match=r"status_history_days .* must be 0 .* or at least ledger_days"):
        RetentionConfig(ledger_days=ledger, status_history_days=history)
    assert RetentionConfig(ledger_days=ledger, status_history_days=0).status_history_days == 0
    assert RetentionConfig(ledger_days=30, status_history_days=30).status_history_days == 30
