-- Each tenant's webhook secret: the current one, and the one it replaced with the end of that
-- one's grace period (microseconds since the Unix epoch, UTC; it signs while now is before it).
-- One row per tenant, so instances sharing the database agree on it. Number 0004: 0002
-- belongs to the tenants' migration.
CREATE TABLE tenant_secrets (
    tenant TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    previous TEXT,
    previous_until BIGINT,
    rotated_at BIGINT NOT NULL
);
