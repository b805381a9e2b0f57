-- helpline schema 7: attachments, stored once by their SHA-256 (rows, not a file each:
-- creating a file per message costs more than the message on this kind of disk).

CREATE TABLE attachments (
    sha256       TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    data         BLOB NOT NULL,
    created_at   REAL NOT NULL
);

-- Which events use which attachment, so erasure and retention can drop unused content.
CREATE TABLE attachment_refs (
    event_id TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    PRIMARY KEY (event_id, sha256)
) WITHOUT ROWID;
CREATE INDEX attachment_refs_by_blob ON attachment_refs (sha256);
