-- The scheduler's bookkeeping of rows Kafka refused (issue #6): a poison row
-- backs off instead of being retried every second, and an SRE can see why.
ALTER TABLE scheduled ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
ALTER TABLE scheduled ADD COLUMN IF NOT EXISTS last_error text;
-- housekeeping deletes published rows by age
CREATE INDEX IF NOT EXISTS scheduled_published ON scheduled (published_at) WHERE published_at IS NOT NULL;
