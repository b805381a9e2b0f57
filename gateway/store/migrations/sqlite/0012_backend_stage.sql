-- helpline schema 12: the "delivered to the backend" stage of a first response. A clock
-- remembers the event that started it; each backend records when it delivered such an
-- event (a customer's message, a ringing call), so the report can split the wait into
-- accepted -> in the helpdesk -> answered, per backend.

ALTER TABLE first_response_clocks ADD COLUMN start_event_id TEXT;

CREATE TABLE backend_delivered (
    event_id     TEXT NOT NULL,
    backend      TEXT NOT NULL,
    delivered_at REAL NOT NULL,
    PRIMARY KEY (event_id, backend)
) WITHOUT ROWID;
CREATE INDEX backend_delivered_at ON backend_delivered (delivered_at);
