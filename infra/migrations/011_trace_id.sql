-- Logs and traces (issue 16): a notification keeps the trace id it was accepted with (the API's X-Trace-Id or
-- W3C traceparent, else Herald's own), so that GET /v1/notifications/{id} answers it and its log lines can be
-- found. Written by the status UPSERT, first non-null wins; rows written before stay NULL. Safe to run twice.
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS trace_id text;
