-- helpline schema 1: contacts and handles, conversations, the event stream,
-- idempotency keys and subscriber cursors.

CREATE TABLE contacts (
    id          TEXT PRIMARY KEY,
    name        TEXT,
    merged_into TEXT REFERENCES contacts (id),
    created_at  REAL NOT NULL
);

-- One row per normalized handle; the primary key makes a handle belong to one contact.
CREATE TABLE handles (
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    created_at REAL NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE INDEX handles_by_contact ON handles (contact_id);

-- number is the short id for humans (ticket tokens such as [#HL-1234]).
CREATE TABLE conversations (
    number           INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    contact_id       TEXT NOT NULL REFERENCES contacts (id),
    status           TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    channel          TEXT NOT NULL,
    channels         TEXT NOT NULL,
    created_at       REAL NOT NULL,
    last_activity_at REAL NOT NULL,
    resolved_at      REAL
);
CREATE INDEX conversations_by_contact ON conversations (contact_id, last_activity_at);
CREATE INDEX conversations_by_status ON conversations (status, number);

-- Explicit thread references (an API thread, later Message-IDs and call ids).
CREATE TABLE thread_refs (
    kind            TEXT NOT NULL,
    ref             TEXT NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    created_at      REAL NOT NULL,
    PRIMARY KEY (kind, ref)
) WITHOUT ROWID;

-- The stream. seq is the public offset: AUTOINCREMENT never reuses a value.
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    type            TEXT NOT NULL,
    conversation_id TEXT,
    time            REAL NOT NULL,
    body            BLOB NOT NULL
);
CREATE INDEX events_by_conversation ON events (conversation_id, seq);

CREATE TABLE idempotency (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    digest     BLOB NOT NULL,
    response   BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_age ON idempotency (created_at);

CREATE TABLE cursors (
    name       TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
