ALTER TABLE deployments ADD COLUMN heartbeat_at TEXT;
