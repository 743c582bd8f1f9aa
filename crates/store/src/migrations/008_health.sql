-- The background checks of stored credentials: the last result (ok or failing,
-- with the preflight code) and when, and which replica holds a check until when.
ALTER TABLE credentials ADD COLUMN health_status TEXT;
ALTER TABLE credentials ADD COLUMN health_code TEXT;
ALTER TABLE credentials ADD COLUMN health_checked_at TEXT;
ALTER TABLE credentials ADD COLUMN health_claimed_until TEXT;
