-- helpline schema 13: the band keys of recent fingerprints move to memory
-- (gateway/store/recent_bands.py); each fingerprint row keeps its keys, packed as
-- little-endian uint32, and whether its sender was anonymous, so the index is rebuilt
-- when the store opens. The old table held only minutes of hints, so they are dropped.

DROP TABLE fingerprint_bands;
ALTER TABLE fingerprints ADD COLUMN anonymous INTEGER NOT NULL DEFAULT 0;
ALTER TABLE fingerprints ADD COLUMN bands BLOB;
