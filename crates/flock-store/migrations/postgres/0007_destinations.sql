-- Receiver isolation, its foundation. `destination` is a delivery's normalised
-- scheme://host[:port]: the stored `url` up to the first `/` after `://` (a stored URL is the
-- URL parser's serialisation: scheme and host lower-cased, a default port left out, a path
-- always present; the whole URL should it have no `/` there). It agrees with
-- `flock_models::Destination`. Stored (Postgres has no virtual generated columns before 18).
ALTER TABLE deliveries ADD COLUMN destination TEXT
    GENERATED ALWAYS AS (substring(url from '^[a-z]+://[^/]*')) STORED;
-- Why a pending delivery waits with no due time (`due_at` NULL), and since when:
-- 'ordered' for an ordered delivery behind an earlier one of its webhook; 'capacity',
-- 'breaker' and 'paused' are reserved for per-destination holds. NULL otherwise.
ALTER TABLE deliveries ADD COLUMN held TEXT
    CHECK (held IS NULL OR held IN ('ordered', 'capacity', 'breaker', 'paused'));
ALTER TABLE deliveries ADD COLUMN held_since TIMESTAMPTZ;

-- A destination's deliveries in flight (leased and pending), counted against its cap: an entry
-- from a claim to its result, none for a delivery that waits.
CREATE INDEX deliveries_in_flight ON deliveries (destination)
    WHERE state = 'pending' AND lease_token IS NOT NULL;
-- Held deliveries by destination and reason, oldest held first: no entry unless something is
-- held, so it costs nothing while nothing is.
CREATE INDEX deliveries_held ON deliveries (destination, held, held_since)
    WHERE held IS NOT NULL;
