-- The receipts agent marks a hard-bounced address undeliverable on every user holding it;
-- without these a batch with a bounce would scan the whole users table.
CREATE INDEX IF NOT EXISTS users_email_lower ON users (lower(email)) WHERE email IS NOT NULL;
CREATE INDEX IF NOT EXISTS users_phone ON users (phone) WHERE phone IS NOT NULL;
