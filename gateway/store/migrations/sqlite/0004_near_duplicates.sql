-- helpline schema 4: fingerprints of recent messages, for near-duplicate flags.
-- Rows older than the longest window are swept away, so these tables stay bounded.

CREATE TABLE fingerprints (
    event_id   TEXT PRIMARY KEY,
    contact_id TEXT NOT NULL,
    at         REAL NOT NULL,
    sketch     BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX fingerprints_by_contact ON fingerprints (contact_id, at);
CREATE INDEX fingerprints_by_age ON fingerprints (at);

-- A few index keys per fingerprint: candidates across contacts, found by lookup, not scan.
CREATE TABLE fingerprint_bands (
    band       INTEGER NOT NULL,
    event_id   TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    anonymous  INTEGER NOT NULL,
    at         REAL NOT NULL,
    PRIMARY KEY (band, event_id)
) WITHOUT ROWID;
CREATE INDEX fingerprint_bands_by_age ON fingerprint_bands (at);
