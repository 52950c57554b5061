-- Digests (issue 20, point 3): a route's `digest` collects a user's events into a window opened by the first one and
-- closed by a scheduled row when it ends; the route agent then sends one notification listing them.
-- One open window per digest key (the partial unique index); an item belongs to exactly one window (its primary key).
-- Writers hold their window FOR SHARE while adding items; the closer's UPDATE waits for them, so every item of a
-- window is in before the window is read, and an item that finds its window closed opens the next one.
CREATE TABLE IF NOT EXISTS digest_windows (
    id          bigserial PRIMARY KEY,
    digest_key  text NOT NULL,
    user_id     text NOT NULL,
    opened_at   timestamptz NOT NULL DEFAULT now(),
    closes_at   timestamptz NOT NULL,
    closed_at   timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS digest_windows_open ON digest_windows (digest_key) WHERE closed_at IS NULL;
CREATE INDEX IF NOT EXISTS digest_windows_closed_at ON digest_windows (closed_at) WHERE closed_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS digest_items (
    digest_key        text NOT NULL,
    event_id          text NOT NULL,
    window_id         bigint NOT NULL REFERENCES digest_windows (id) ON DELETE CASCADE,
    occurred_at       timestamptz NOT NULL,
    cancellation_key  text,
    variables         jsonb NOT NULL,
    added_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (digest_key, event_id)
);
CREATE INDEX IF NOT EXISTS digest_items_window ON digest_items (window_id, occurred_at);
