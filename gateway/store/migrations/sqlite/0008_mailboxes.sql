-- helpline schema 8: where each IMAP mailbox was read up to.
-- `uid` advances in the same transaction as the raw mail it covers, so a restart
-- neither misses nor re-reads a message; `marked_uid` trails it, up to where the
-- messages were flagged \Seen or moved (done only after their commit).

CREATE TABLE mailbox_positions (
    connector   TEXT NOT NULL,
    mailbox     TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    marked_uid  INTEGER NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (connector, mailbox)
) WITHOUT ROWID;

-- A mailbox read again (a changed UIDVALIDITY) skips the mail it already holds.
CREATE INDEX raw_mail_by_key ON raw_mail (dedup_key);
