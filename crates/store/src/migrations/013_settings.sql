-- What a service sets over its image (issue 24): plain environment variables
-- (a JSON object), the command and arguments replacing the image's Entrypoint
-- and Cmd (JSON arrays; NULL keeps the image's), one persistent volume, and the
-- region whose replicas may run it (NULL: any).
ALTER TABLE services ADD COLUMN env TEXT NOT NULL DEFAULT '{}';
ALTER TABLE services ADD COLUMN command TEXT;
ALTER TABLE services ADD COLUMN args TEXT;
ALTER TABLE services ADD COLUMN volume_path TEXT;
ALTER TABLE services ADD COLUMN volume_size_mb INTEGER;
ALTER TABLE services ADD COLUMN region TEXT;
-- Write-only variables, sealed like registry passwords (base64 of the sealed
-- bytes, or the ARN when kept in AWS Secrets Manager); `as_file`: given as
-- /run/secrets/NAME rather than an environment variable.
CREATE TABLE service_secrets (
    service_id TEXT NOT NULL REFERENCES services (id),
    name TEXT NOT NULL,
    as_file INTEGER NOT NULL DEFAULT 0,
    sealed TEXT NOT NULL DEFAULT '',
    secret_arn TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (service_id, name)
);
-- The replicas alive, with the region each declares (`--region`), so that a
-- deployment for a region none serves can say so.
CREATE TABLE replicas (
    url TEXT PRIMARY KEY,
    region TEXT,
    seen_at TEXT NOT NULL
);
