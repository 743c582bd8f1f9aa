-- Tokens scoped to one project that read its registry credentials and nothing
-- else (the Docker credential helper, the kubelet credential provider), stored
-- only as a SHA-256 hash like users' tokens.
CREATE TABLE project_tokens (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    UNIQUE (project_id, name)
);
