CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES services(id),
    project_id TEXT NOT NULL,
    status TEXT NOT NULL,
    image TEXT NOT NULL,
    digest TEXT,
    failure_code TEXT,
    failure_message TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX deployments_by_status ON deployments (status, created_at);
CREATE INDEX deployments_by_service ON deployments (service_id, created_at);
