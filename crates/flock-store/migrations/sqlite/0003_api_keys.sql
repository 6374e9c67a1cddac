-- API keys: the SHA-256 of each key (64 hexadecimal digits), never the key itself, with its
-- tenant, name, scopes (names separated by spaces) and times (microseconds since the Unix
-- epoch, UTC). Number 0003: 0002 belongs to the tenants' migration.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at);

CREATE INDEX api_keys_revoked ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;
