-- helpline schema 2: the identity graph's audit trail, conversation lineage,
-- and which contact each event concerns (for lookups and erasure).

-- Which message linked a handle to its contact, and whether that evidence was verified.
ALTER TABLE handles ADD COLUMN cause_event TEXT;
ALTER TABLE handles ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;

-- Every merge, undone or not: the operator's record of who was joined and why.
CREATE TABLE merges (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    merged      TEXT NOT NULL REFERENCES contacts (id),
    survivor    TEXT NOT NULL REFERENCES contacts (id),
    cause_event TEXT,
    evidence    TEXT NOT NULL,
    at          REAL NOT NULL,
    undone_at   REAL
);
CREATE INDEX merges_by_merged ON merges (merged);
CREATE INDEX contacts_by_survivor ON contacts (merged_into);

-- A conversation started after the reopen window links to the one before it.
ALTER TABLE conversations ADD COLUMN previous_id TEXT;

ALTER TABLE events ADD COLUMN contact_id TEXT;
UPDATE events SET contact_id = json_extract(CAST(body AS TEXT), '$.data.contact_id');
CREATE INDEX events_by_contact ON events (contact_id);

-- A suggested link between two contacts is raised once per pair, not on every message.
CREATE TABLE link_suggestions (
    a           TEXT NOT NULL,
    b           TEXT NOT NULL,
    cause_event TEXT NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (a, b)
) WITHOUT ROWID;
