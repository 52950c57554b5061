-- Campaign throttling and send windows (issue 18): kept with the campaign so that `herald campaign send --resume`
-- produces the rest at the same rate and with the same window
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS rate_per_minute integer;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS send_window text;
