-- What kind of credential a service's registry credential is (basic, ecr, gcp, acr).
ALTER TABLE credentials ADD COLUMN kind TEXT NOT NULL DEFAULT 'basic';
