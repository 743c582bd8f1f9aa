ALTER TABLE credentials ADD COLUMN secret_arn TEXT;
