-- A service's restart policy, how often its running deployment was restarted and
-- how its container last exited; a deployment berth queued to restart a service.
ALTER TABLE services ADD COLUMN restart_policy TEXT NOT NULL DEFAULT 'on-failure';
ALTER TABLE services ADD COLUMN restarts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN last_exit_code BIGINT;
ALTER TABLE services ADD COLUMN last_exit_signal BIGINT;
ALTER TABLE services ADD COLUMN last_exit_at TEXT;
ALTER TABLE deployments ADD COLUMN restart_of TEXT;
