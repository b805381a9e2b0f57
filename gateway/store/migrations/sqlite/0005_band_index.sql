-- helpline schema 5: band keys indexed by (band, anonymous, at), so a lookup reads only the
-- candidates it can use, even when thousands of messages share a template. The table only
-- holds minutes of hints, so it is rebuilt empty.

DROP TABLE fingerprint_bands;
CREATE TABLE fingerprint_bands (
    band       INTEGER NOT NULL,
    anonymous  INTEGER NOT NULL,
    at         REAL NOT NULL,
    event_id   TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    PRIMARY KEY (band, anonymous, at, event_id)
) WITHOUT ROWID;
CREATE INDEX fingerprint_bands_by_age ON fingerprint_bands (at);
