-- helpline schema 3: erasure and retention leave tombstones, so offsets and counts stay whole.

ALTER TABLE contacts ADD COLUMN erased_at REAL;
-- 1 once an event's personal content was removed (erasure or retention).
ALTER TABLE events ADD COLUMN erased INTEGER NOT NULL DEFAULT 0;
