-- How a service is reached and what it reaches (issue 22): the port its app
-- listens on (NULL: the image's single exposed port, or none: a worker), the
-- path that answers when it is ready, its network (`public` | `none`), and its
-- extra host names, kept in a table of their own so that the server holds each
-- name once (the primary key) and a list on the service for reading back.
ALTER TABLE services ADD COLUMN port INTEGER;
ALTER TABLE services ADD COLUMN health_path TEXT;
ALTER TABLE services ADD COLUMN network TEXT NOT NULL DEFAULT 'public';
ALTER TABLE services ADD COLUMN domains TEXT NOT NULL DEFAULT '';
CREATE TABLE service_domains (
    domain TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES services(id)
);
