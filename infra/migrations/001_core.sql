-- Recipients: profile, addresses, devices, preferences
CREATE TABLE IF NOT EXISTS users (
    id                   text PRIMARY KEY,
    email                text,
    phone                text,
    locale               text NOT NULL DEFAULT 'en',
    time_zone            text NOT NULL DEFAULT 'UTC',
    first_name           text,
    email_undeliverable  boolean NOT NULL DEFAULT false,
    phone_undeliverable  boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS devices (
    id                 bigserial PRIMARY KEY,
    user_id            text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token              text NOT NULL UNIQUE,
    platform           text NOT NULL CHECK (platform IN ('android', 'ios', 'web')),
    active             boolean NOT NULL DEFAULT true,
    temp_failures      integer NOT NULL DEFAULT 0,
    last_seen_at       timestamptz NOT NULL DEFAULT now(),
    deactivated_at     timestamptz,
    deactivated_reason text,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS devices_user ON devices (user_id) WHERE active;

-- channels / categories: {"sms": false, "marketing": false}; absent means allowed
CREATE TABLE IF NOT EXISTS preferences (
    user_id      text PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    muted        boolean NOT NULL DEFAULT false,
    channels     jsonb NOT NULL DEFAULT '{}'::jsonb,
    categories   jsonb NOT NULL DEFAULT '{}'::jsonb,
    quiet_start  time,
    quiet_end    time,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Templates: code x channel x locale, versioned, one active version
CREATE TABLE IF NOT EXISTS templates (
    id          bigserial PRIMARY KEY,
    code        text NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    locale      text NOT NULL DEFAULT 'default',
    version     integer NOT NULL,
    subject     text,
    body_text   text NOT NULL,
    body_html   text,
    push_title  text,
    active      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (code, channel, locale, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS templates_one_active ON templates (code, channel, locale) WHERE active;

-- Notifications and their status history
CREATE TABLE IF NOT EXISTS notifications (
    id           text PRIMARY KEY,
    event_id     text NOT NULL,
    event_type   text NOT NULL,
    user_id      text NOT NULL,
    template     text,
    category     text,
    campaign_id  text,
    status       text NOT NULL,
    status_rank  integer NOT NULL DEFAULT 0,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notifications_user ON notifications (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS notifications_campaign ON notifications (campaign_id) WHERE campaign_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS status_history (
    id                   bigserial PRIMARY KEY,
    notification_id      text NOT NULL,
    channel              text,
    status               text NOT NULL,
    reason               text,
    delivery_id          text,
    provider_message_id  text,
    at                   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS status_history_notification ON status_history (notification_id, at);

-- De-duplication authority: one notification per (event, channel)
CREATE TABLE IF NOT EXISTS dedup (
    event_id    text NOT NULL,
    channel     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, channel)
);

-- The delivery ledger: the effectively-once boundary in front of providers
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id          text PRIMARY KEY,
    notification_id      text NOT NULL,
    channel              text NOT NULL,
    address              text NOT NULL,
    status               text NOT NULL CHECK (status IN ('claimed', 'sent', 'failed')),
    attempts             integer NOT NULL DEFAULT 0,
    provider_message_id  text,
    error                text,
    claimed_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS deliveries_provider_id ON deliveries (provider_message_id) WHERE provider_message_id IS NOT NULL;

-- The outbox of the scheduler: send_at, quiet-hours deferrals
CREATE TABLE IF NOT EXISTS scheduled (
    id            bigserial PRIMARY KEY,
    due_at        timestamptz NOT NULL,
    topic         text NOT NULL,
    key           bytea,
    value         bytea NOT NULL,
    headers       jsonb NOT NULL DEFAULT '{}'::jsonb,
    kind          text NOT NULL DEFAULT 'send_at',
    notification_id text,
    published_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS scheduled_due ON scheduled (due_at) WHERE published_at IS NULL;

CREATE TABLE IF NOT EXISTS campaigns (
    id          text PRIMARY KEY,
    template    text NOT NULL,
    source      text NOT NULL,
    total       bigint NOT NULL DEFAULT 0,
    produced    bigint NOT NULL DEFAULT 0,
    status      text NOT NULL DEFAULT 'producing',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS api_keys (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    prefix      text NOT NULL,
    key_hash    text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE IF NOT EXISTS api_idempotency (
    api_key_id       bigint NOT NULL,
    key              text NOT NULL,
    body_hash        text NOT NULL,
    notification_id  text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, key)
);
