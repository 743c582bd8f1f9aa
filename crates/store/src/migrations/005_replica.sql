-- The replica that ran a deployment (its advertised URL): where its container and
-- log are, for the others to forward log reads to.
ALTER TABLE deployments ADD COLUMN replica_url TEXT;
