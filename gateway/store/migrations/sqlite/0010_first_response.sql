-- helpline schema 10: first-response clocks, one row per clock (a conversation gets a new
-- one after it was resolved). Written by the tracker in the same transaction as the
-- stream position it has read up to and the met/breached events it emits.

CREATE TABLE first_response_clocks (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id     TEXT NOT NULL,
    conversation_number INTEGER NOT NULL,
    contact_id          TEXT NOT NULL,
    channel             TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('running', 'met', 'cancelled')),
    started_at          REAL NOT NULL,
    customer_at         REAL,
    target              REAL NOT NULL,
    calendar            TEXT,
    due_at              REAL NOT NULL,
    breached_at         REAL,
    stopped_at          REAL,
    seconds             REAL,
    business_seconds    REAL,
    within_target       INTEGER,
    reply_event_id      TEXT,
    reply_channel       TEXT,
    rearm               INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX first_response_by_conversation ON first_response_clocks (conversation_id, id);
CREATE INDEX first_response_due ON first_response_clocks (due_at)
    WHERE state = 'running' AND breached_at IS NULL;
CREATE INDEX first_response_running ON first_response_clocks (started_at)
    WHERE state = 'running';
CREATE INDEX first_response_met ON first_response_clocks (stopped_at) WHERE state = 'met';
