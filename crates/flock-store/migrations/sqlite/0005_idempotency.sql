-- Idempotency records: what a publish under an X-Idempotency-Key answered, so that a retry on
-- any instance, or after a restart, gets the first answer again. A record keeps a bounded
-- answer (status, correlation id, and for a sync publish its artifact ids, `completed` and
-- `duration_ms`), never the artifacts' bodies. Times in microseconds since the Unix epoch,
-- UTC; a record whose `expires_at` has passed counts as absent. `state` is `in_progress` or
-- `done`; `token` names the claim that may complete or release it. Number 0005: 0004 belongs
-- to the tenant secrets' migration.
CREATE TABLE idempotency_keys (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    route TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    token TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    status BIGINT,
    correlation_id TEXT,
    artifact_ids TEXT,
    completed BIGINT,
    duration_ms BIGINT,
    PRIMARY KEY (tenant, key)
);
-- A tenant's records oldest first, for trimming it to `idempotency.max_entries`.
CREATE INDEX idempotency_keys_by_tenant ON idempotency_keys (tenant, created_at);
-- Expired records first, for pruning them in batches.
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
