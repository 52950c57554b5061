-- API security (issue 16): API keys carry scopes, an optional tenant and an optional request rate;
-- users carry an optional tenant. A key without a tenant reaches every user (as before); a key with
-- one reaches only its tenant's users. Existing keys keep what they could do (send, read, admin) except
-- choosing a critical category (a password reset) themselves: that takes the 'critical' scope.
-- Safe to run twice.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS scopes text[] NOT NULL DEFAULT '{send,read,admin}';
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS tenant text;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS rate_limit integer;
DO $$ BEGIN
    ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_known
        CHECK (scopes <@ ARRAY['send', 'read', 'admin', 'critical']::text[]);
    ALTER TABLE api_keys ADD CONSTRAINT api_keys_rate_limit_positive CHECK (rate_limit IS NULL OR rate_limit > 0);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

ALTER TABLE users ADD COLUMN IF NOT EXISTS tenant text;
CREATE INDEX IF NOT EXISTS users_tenant ON users (tenant) WHERE tenant IS NOT NULL;
