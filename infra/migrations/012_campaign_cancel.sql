-- Campaign cancel (issue 18): workers read canceled_at (cached for HERALD_CAMPAIGN__CANCEL_CACHE_SECONDS) and end the
-- campaign's not-yet-sent notifications 'canceled'; send_at holds production until then (POST /v1/campaigns)
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS canceled_at timestamptz;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS send_at timestamptz;
