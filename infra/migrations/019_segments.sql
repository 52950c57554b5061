-- Saved recipient queries (segments): an operator saves a SELECT once (`herald segments save`), and a campaign names it
-- (`POST /v1/campaigns {"segment": ...}`, `herald campaign send --segment`), so no SQL travels over HTTP. A campaign
-- keeps the query it started with: a segment changed later does not change a running or resumed campaign.
CREATE TABLE IF NOT EXISTS segments (
    name         text PRIMARY KEY,
    query        text NOT NULL,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
