-- Flock's durable store, Postgres flavour. Several instances may share one database.

-- Artifacts, in publication order (`position`). The payload is the JSON text as published
-- (TEXT, not JSONB, so its key order is kept). Artifacts are never pruned.
CREATE TABLE artifacts (
    position       BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             UUID        NOT NULL UNIQUE,
    type_name      TEXT        NOT NULL,
    payload        TEXT        NOT NULL,
    produced_by    TEXT        NOT NULL,
    correlation_id UUID        NOT NULL,
    tags           TEXT[]      NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX artifacts_by_correlation ON artifacts (correlation_id, position);
CREATE INDEX artifacts_by_type ON artifacts (type_name, position);

-- Webhook deliveries: the transactional outbox. A delivery is written in the same transaction
-- as its artifact. `secret` and `body` are what every attempt signs and sends, so the database
-- holds webhook secrets; both are cleared once the delivery is delivered.
CREATE TABLE deliveries (
    id                  UUID        PRIMARY KEY,  -- sent as `webhook-id`
    correlation_id      UUID        NOT NULL,
    artifact_id         UUID        NOT NULL,
    sequence            BIGINT      NOT NULL,
    url                 TEXT        NOT NULL,
    secret              TEXT,
    body                BYTEA,
    artifact_created_at TIMESTAMPTZ NOT NULL,
    state               TEXT        NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts            BIGINT      NOT NULL DEFAULT 0,  -- attempts recorded
    round_start         BIGINT      NOT NULL DEFAULT 0,  -- attempts recorded before the last redelivery
    -- While pending: when it may be claimed, i.e. its next attempt's due time, or the expiry of
    -- the lease while `lease_token` is set (an expired lease is claimed again, by any instance).
    due_at              TIMESTAMPTZ,
    lease_token         BIGINT,
    failure             TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    completed_at        TIMESTAMPTZ
);
CREATE INDEX deliveries_by_correlation ON deliveries (correlation_id, sequence);
CREATE INDEX deliveries_due ON deliveries (due_at, id) INCLUDE (lease_token) WHERE state = 'pending';
CREATE INDEX deliveries_completed ON deliveries (completed_at, id) WHERE state <> 'pending';

-- Every attempt of a delivery, pruned with it.
CREATE TABLE attempts (
    delivery_id UUID        NOT NULL,
    number      BIGINT      NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    status_code BIGINT,
    error_kind  TEXT,
    error       TEXT,
    duration_ms BIGINT      NOT NULL,
    PRIMARY KEY (delivery_id, number)
);

-- Deliveries churn (every claim and every record writes a new row version): vacuum and analyze
-- them often, so that claims do not wade through dead index entries and plans follow the size of
-- the queue.
ALTER TABLE deliveries SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_analyze_threshold = 1000
);
