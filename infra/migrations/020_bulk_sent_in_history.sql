-- The bulk lane's deliver agents record a send by the history's sent-once row (migration 008), written in the same
-- transaction as the notification's status right after the provider call, and no longer UPDATE the ledger row to
-- 'sent' (an UPDATE that could not be HOT: ~16 us of PostgreSQL per campaign recipient). Such a row stays 'claimed';
-- the claim statement takes a sent-once history row for 'sent'. delivery_state is the ledger as readers want it:
-- 'sent', its provider message id and time, whichever of the two recorded the send. Safe to run twice.
CREATE INDEX IF NOT EXISTS status_history_sent_pmid ON status_history (provider_message_id)
    WHERE status = 'sent' AND provider_message_id IS NOT NULL;

CREATE OR REPLACE VIEW delivery_state AS
SELECT d.delivery_id, d.notification_id, d.channel, d.address,
       CASE WHEN h.delivery_id IS NULL THEN d.status ELSE 'sent' END AS status,
       d.attempts,
       COALESCE(d.provider_message_id, h.provider_message_id) AS provider_message_id,
       CASE WHEN h.delivery_id IS NULL THEN d.error END AS error,
       d.claimed_at,
       COALESCE(d.sent_at, h.at) AS sent_at,
       GREATEST(d.updated_at, h.at) AS updated_at
FROM deliveries d
LEFT JOIN status_history h ON h.delivery_id = d.delivery_id AND h.status = 'sent' AND h.delivery_id IS NOT NULL;
