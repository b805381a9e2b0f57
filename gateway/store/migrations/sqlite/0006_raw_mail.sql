-- helpline schema 6: mail as it arrived, committed before the sender hears 250.
-- Normalization reads it from here, so a crash between the two loses nothing:
-- 'pending' rows are normalized at the next start. 'failed' ones (no usable sender,
-- say) stay for an operator: acknowledged mail is never dropped.

CREATE TABLE raw_mail (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    connector   TEXT NOT NULL,
    received_at REAL NOT NULL,
    mail_from   TEXT,
    recipients  TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    raw         BLOB NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    event_id    TEXT,
    error       TEXT
);
CREATE INDEX raw_mail_pending ON raw_mail (connector) WHERE state = 'pending';
