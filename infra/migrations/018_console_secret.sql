-- The console's session secret when HERALD_CONSOLE__SECRET is unset: made once, at random, by the first API process,
-- and read by every other (herald api --workers N, several replicas), so a session signed by one process is good at
-- all of them and survives a restart. A secret set in the settings is used instead and this row stays unused.
CREATE TABLE IF NOT EXISTS console_secret (
    id          int PRIMARY KEY CHECK (id = 1),
    secret      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
