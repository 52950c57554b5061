-- Cancellation (issue 20, point 5): a cancel by cancellation key or by notification id is a row here; workers read
-- the rows changed since their last look (cached for HERALD_CAMPAIGN__CANCEL_CACHE_SECONDS) and end what they hold
-- 'canceled'. A key cancels what occurred at or before its canceled_at (a later event with the same key goes on).
CREATE TABLE IF NOT EXISTS cancellations (
    kind         text NOT NULL CHECK (kind IN ('key', 'notification')),
    key          text NOT NULL,
    canceled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS cancellations_canceled_at ON cancellations (canceled_at);

-- scheduled rows (send_at, quiet hours) carry their key; a canceled row is never published
ALTER TABLE scheduled ADD COLUMN IF NOT EXISTS cancellation_key text;
ALTER TABLE scheduled ADD COLUMN IF NOT EXISTS canceled_at timestamptz;
CREATE INDEX IF NOT EXISTS scheduled_cancellation_key ON scheduled (cancellation_key)
    WHERE cancellation_key IS NOT NULL AND published_at IS NULL;
CREATE INDEX IF NOT EXISTS scheduled_notification ON scheduled (notification_id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS scheduled_canceled ON scheduled (canceled_at) WHERE canceled_at IS NOT NULL;

-- Recurring sends (issue 20, point 4): a cron expression evaluated in each recipient's zone; one target row per
-- recipient holds its next occurrence, claimed by the scheduler with FOR UPDATE SKIP LOCKED
CREATE TABLE IF NOT EXISTS recurring_schedules (
    id              text PRIMARY KEY,
    cron            text NOT NULL,
    template        text NOT NULL,
    channels        text[] NOT NULL,
    category        text NOT NULL DEFAULT 'transactional',
    variables_json  text NOT NULL DEFAULT '{}',
    paused_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS recurring_targets (
    schedule_id     text NOT NULL REFERENCES recurring_schedules (id) ON DELETE CASCADE,
    user_id         text NOT NULL,
    time_zone       text NOT NULL,
    next_at         timestamptz NOT NULL,
    last_at         timestamptz,
    sent            bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule_id, user_id)
);
CREATE INDEX IF NOT EXISTS recurring_targets_due ON recurring_targets (next_at);
