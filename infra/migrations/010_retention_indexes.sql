-- Retention (issue 16): the scheduler's housekeeping deletes each table's rows older than its window
-- (HERALD_RETENTION__*), oldest first in bounded batches; these indexes let it find them without a full scan.
-- scheduled already has scheduled_published (005). Safe to run twice.
CREATE INDEX IF NOT EXISTS dedup_created_at ON dedup (created_at);
CREATE INDEX IF NOT EXISTS deliveries_updated_at ON deliveries (updated_at);
CREATE INDEX IF NOT EXISTS api_idempotency_created_at ON api_idempotency (created_at);
CREATE INDEX IF NOT EXISTS status_history_at ON status_history (at);
