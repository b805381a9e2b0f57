-- helpline schema 11: ticket backends. Each backend reads the stream from its own
-- position: a low-water mark (every event at or below it is finished) plus the events
-- above it already finished, so concurrent delivery of many conversations never skips one.

CREATE TABLE backend_positions (
    backend     TEXT PRIMARY KEY,
    low_water   INTEGER NOT NULL,
    -- the highest offset handed to a delivery lane: above it nothing was ever sent
    dispatched  INTEGER NOT NULL,
    updated_at  REAL NOT NULL
);

CREATE TABLE backend_done (
    backend TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (backend, seq)
) WITHOUT ROWID;

-- conversation -> ticket and contact -> user, per backend. A row is written 'pending'
-- before the create is sent (the per-conversation lock across restarts), then 'created'.
CREATE TABLE backend_refs (
    backend     TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('ticket', 'user')),
    local_id    TEXT NOT NULL,
    remote_id   TEXT,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'created')),
    event_id    TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (backend, kind, local_id)
) WITHOUT ROWID;
CREATE INDEX backend_refs_by_remote ON backend_refs (backend, kind, remote_id);

CREATE TABLE dead_letters (
    backend          TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    event_id         TEXT NOT NULL,
    type             TEXT NOT NULL,
    conversation_id  TEXT,
    status           INTEGER,
    error            TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    parked_at        REAL NOT NULL,
    replay_requested REAL,
    PRIMARY KEY (backend, seq)
) WITHOUT ROWID;
CREATE INDEX dead_letters_by_conversation ON dead_letters (conversation_id);

-- small durable values a backend keeps (the last transaction id a poller has read)
CREATE TABLE backend_state (
    backend    TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (backend, key)
) WITHOUT ROWID;
