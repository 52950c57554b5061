-- Route stage (#3).
-- dedup.origin: the Kafka position (topic:partition:offset) of the record that
-- claimed (event, channel). A record redelivered after a crash finds its own
-- claim and goes on; the same event id at another position is a duplicate.
ALTER TABLE dedup ADD COLUMN IF NOT EXISTS origin text;

-- scheduled.dedup_key: one scheduled row per send_at event / deferred delivery,
-- even when a batch is processed twice (NULL for rows written by others).
ALTER TABLE scheduled ADD COLUMN IF NOT EXISTS dedup_key text;
CREATE UNIQUE INDEX IF NOT EXISTS scheduled_dedup_key ON scheduled (dedup_key);
