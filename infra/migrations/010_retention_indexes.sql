-- Retention (issue 16): the scheduler's housekeeping deletes each table's rows older than its window
-- (HERALD_RETENTION__*), oldest first in bounded batches; these indexes let it find them without a full scan.
-- BRIN, not btree: these rows are written in time order, so a few bytes per block range find the old ones, and the
-- hot path (a campaign writes a ledger row, a de-dup row and a history row per recipient) pays next to nothing to
-- maintain them. scheduled already has scheduled_published (005). Safe to run twice.
CREATE INDEX IF NOT EXISTS dedup_created_at ON dedup USING brin (created_at);
CREATE INDEX IF NOT EXISTS deliveries_updated_at ON deliveries USING brin (updated_at);
CREATE INDEX IF NOT EXISTS api_idempotency_created_at ON api_idempotency USING brin (created_at);
CREATE INDEX IF NOT EXISTS status_history_at ON status_history USING brin (at);
