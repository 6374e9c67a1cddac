-- Flock's durable store, SQLite flavour. Times are microseconds since the Unix epoch (UTC);
-- ids are UUIDs as 16-byte blobs.

-- Artifacts, in publication order (`position`). The payload is the JSON text as published, so
-- its key order is kept. Artifacts are never pruned.
CREATE TABLE artifacts (
    position       INTEGER PRIMARY KEY,
    id             BLOB    NOT NULL UNIQUE,
    type_name      TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    produced_by    TEXT    NOT NULL,
    correlation_id BLOB    NOT NULL,
    tags           TEXT    NOT NULL,  -- JSON array of strings, sorted and unique
    created_at     INTEGER NOT NULL
);
CREATE INDEX artifacts_by_correlation ON artifacts (correlation_id, position);
CREATE INDEX artifacts_by_type ON artifacts (type_name, position);

-- Webhook deliveries: the transactional outbox. A delivery is written in the same transaction
-- as its artifact. `secret` and `body` are what every attempt signs and sends, so the file
-- holds webhook secrets; both are cleared once the delivery is delivered.
CREATE TABLE deliveries (
    id                  BLOB    PRIMARY KEY NOT NULL,  -- sent as `webhook-id`
    correlation_id      BLOB    NOT NULL,
    artifact_id         BLOB    NOT NULL,
    sequence            INTEGER NOT NULL,
    url                 TEXT    NOT NULL,
    secret              TEXT,
    body                BLOB,
    artifact_created_at INTEGER NOT NULL,
    state               TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts            INTEGER NOT NULL DEFAULT 0,  -- attempts recorded
    round_start         INTEGER NOT NULL DEFAULT 0,  -- attempts recorded before the last redelivery
    -- While pending: when it may be claimed, i.e. its next attempt's due time, or the expiry of
    -- the lease while `lease_token` is set (an expired lease is claimed again).
    due_at              INTEGER,
    lease_token         INTEGER,
    failure             TEXT,
    created_at          INTEGER NOT NULL,
    completed_at        INTEGER
);
CREATE INDEX deliveries_by_correlation ON deliveries (correlation_id, sequence);
CREATE INDEX deliveries_due ON deliveries (due_at, id, lease_token) WHERE state = 'pending';
CREATE INDEX deliveries_completed ON deliveries (completed_at, id) WHERE state <> 'pending';

-- Every attempt of a delivery, pruned with it.
CREATE TABLE attempts (
    delivery_id BLOB    NOT NULL,
    number      INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    status_code INTEGER,
    error_kind  TEXT,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, number)
) WITHOUT ROWID;
