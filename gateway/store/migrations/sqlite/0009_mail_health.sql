-- helpline schema 9: what the mail channel learns about customers' addresses, and the
-- age at which finished raw mail goes.

-- An address a delivery report (RFC 3464) called permanently failing, with why and which
-- automatic event recorded it. The mark stands until mail from that address arrives
-- after it (an inbound event past `seq`): that is read from the stream, never written.
CREATE TABLE email_failures (
    address   TEXT PRIMARY KEY,
    reason    TEXT NOT NULL,
    status    TEXT,
    failed_at REAL NOT NULL,
    event_id  TEXT NOT NULL,
    seq       INTEGER NOT NULL
) WITHOUT ROWID;

-- The latest automatic acknowledgement each address was sent: at most one within
-- the configured window, whatever restarts come in between.
CREATE TABLE auto_acks (
    address         TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    at              REAL NOT NULL
) WITHOUT ROWID;

-- [retention] raw_mail drops finished raw mail by age; pending and failed rows stay.
CREATE INDEX raw_mail_done_by_age ON raw_mail (received_at) WHERE state = 'done';
-- Erasing a person drops the mail they sent as it arrived, found by its event.
CREATE INDEX raw_mail_by_event ON raw_mail (event_id) WHERE event_id IS NOT NULL;
