-- Receiver isolation, its foundation. `destination` is a delivery's normalised
-- scheme://host[:port]: the stored `url` up to the first `/` after `://` (a stored URL is the
-- URL parser's serialisation: scheme and host lower-cased, a default port left out, a path
-- always present; the whole URL should it have no `/` there). It agrees with
-- `flock_models::Destination`. Virtual: computed when read, stored only in the index.
ALTER TABLE deliveries ADD COLUMN destination TEXT GENERATED ALWAYS AS (
    CASE WHEN instr(substr(url, instr(url, '://') + 3), '/') = 0 THEN url
         ELSE substr(url, 1, instr(url, '://') + 1 + instr(substr(url, instr(url, '://') + 3), '/'))
    END) VIRTUAL;
-- Why a pending delivery waits with no due time (`due_at` NULL), and since when
-- (microseconds): 'ordered' for an ordered delivery behind an earlier one of its webhook;
-- 'capacity', 'breaker' and 'paused' for a delivery its destination holds (too many in flight,
-- circuit open, paused), until released or expired. NULL otherwise.
ALTER TABLE deliveries ADD COLUMN held TEXT
    CHECK (held IS NULL OR held IN ('ordered', 'capacity', 'breaker', 'paused'));
ALTER TABLE deliveries ADD COLUMN held_since INTEGER;

-- The deliveries each destination holds, longest held first (then by id, as the memory outbox
-- orders them): "the longest-held N of a destination" is a range of it read in order, with no
-- sort. Ordered parking takes no entry, and nothing does while no destination holds anything.
-- (In-flight counts are the dispatcher's, in memory: an index written at every claim and
-- result would cost the hot path.)
CREATE INDEX deliveries_held ON deliveries (destination, held_since, id)
    WHERE held IN ('capacity', 'breaker', 'paused');
