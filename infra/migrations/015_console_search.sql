-- The console's message log (issue 21) finds a notification by its trace id: an index, so that a search stays a
-- look-up on a large table. Partial: rows written before trace ids (011) stay NULL. Safe to run twice.
CREATE INDEX IF NOT EXISTS notifications_trace_id ON notifications (trace_id) WHERE trace_id IS NOT NULL;
