-- A delivery is 'sent' once in the history: a replayed dead letter of a delivery already sent, or a batch read again
-- after an outage, says 'sent' again (so no status is lost), and the status writer keeps only the first row.
DELETE FROM status_history a USING status_history b
WHERE a.status = 'sent' AND b.status = 'sent' AND a.delivery_id = b.delivery_id AND a.id > b.id;
CREATE UNIQUE INDEX IF NOT EXISTS status_history_sent_once ON status_history (delivery_id)
    WHERE status = 'sent' AND delivery_id IS NOT NULL;
