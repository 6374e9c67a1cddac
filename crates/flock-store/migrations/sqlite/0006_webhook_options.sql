-- Webhook options. `webhook` is the delivery's webhook among its workflow's (the index in the
-- publish request's `webhooks`, 0 for a single webhook). `ordered` (0 or 1) says its webhook's
-- deliveries go one after another in sequence order: a pending ordered delivery with an
-- earlier one of its webhook still pending is parked (`due_at` NULL) until that one is
-- delivered or has failed. `header_names` is the JSON array of its custom headers' names,
-- kept for the delivery view; `headers` the JSON array of [name, value] pairs, treated like the
-- secret: cleared with it once the delivery is delivered.
ALTER TABLE deliveries ADD COLUMN webhook INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN ordered INTEGER NOT NULL DEFAULT 0 CHECK (ordered IN (0, 1));
ALTER TABLE deliveries ADD COLUMN header_names TEXT;
ALTER TABLE deliveries ADD COLUMN headers TEXT;

-- The due ordered deliveries, which a claim checks against their webhook's earlier ones: an
-- index with no rows unless ordered webhooks are in use.
CREATE INDEX deliveries_ordered_due ON deliveries (due_at) WHERE state = 'pending' AND ordered = 1;
