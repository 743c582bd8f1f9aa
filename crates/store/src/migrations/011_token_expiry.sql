-- A project token may carry an expiry (RFC 3339 UTC, like every time the store
-- keeps, so that it compares as text); NULL: it never expires.
ALTER TABLE project_tokens ADD COLUMN expires_at TEXT;
