-- The scheduler's bookkeeping of rows Kafka refused (issue #6): a poison row
-- backs off instead of being retried every second, and an SRE can see why.
ALTER TABLE scheduled ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
ALTER TABLE scheduled ADD COLUMN IF NOT EXISTS last_error text;
-- housekeeping deletes published rows by age
CREATE INDEX IF NOT EXISTS scheduled_published ON scheduled (published_at) WHERE published_at IS NOT NULL;

-- Campaigns (issue #6): what `herald campaign send --resume` needs to produce the same messages again
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS channels text[] NOT NULL DEFAULT '{email}';
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS category text NOT NULL DEFAULT 'marketing';
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS variables jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS error text;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS finished_at timestamptz;
