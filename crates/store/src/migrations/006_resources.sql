-- A service's own container limits; NULL keeps the server's defaults.
ALTER TABLE services ADD COLUMN memory_mb BIGINT;
ALTER TABLE services ADD COLUMN pids BIGINT;
ALTER TABLE services ADD COLUMN cpu_millis BIGINT;
