-- Devices carry their platform (issue 19): the push channel sends APNs device tokens to APNs and the rest to FCM.
-- The column and its CHECK (android, ios, web) exist since 001; rows written without a platform are FCM
-- (android) ones, and a token of 64 hex characters is an APNs device token, so its device is an iOS one.
-- Safe to run twice: SET DEFAULT and the UPDATE are idempotent.
ALTER TABLE devices ALTER COLUMN platform SET DEFAULT 'android';
UPDATE devices SET platform = 'ios' WHERE platform <> 'ios' AND token ~ '^[0-9A-Fa-f]{64}$';
