-- EPCIS capture (POST /api/v1/epcis/capture): suppliers' events as they came, stored once by
-- their eventID (or, without one, by the SHA-256 of their canonical JSON; see
-- src/epcis/capture.rs), and the lot keys each event names. An event is linked to one of our
-- lots when they share a key; the link is evaluated when the lot is read, so a document
-- captured before its goods are received links once they are. Not part of the hash-chained
-- event log: these are the supplier's records, not our plant's.
CREATE TABLE epcis_captured (
    id           bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    event_type   text NOT NULL,
    event_time   timestamptz NOT NULL,
    action       text,
    biz_step     text,
    disposition  text,
    read_point   text,
    biz_location text,
    -- sourceList owning / possessing party, else the document's sender
    source       text,
    sender       text,
    body         jsonb NOT NULL,
    captured_at  timestamptz NOT NULL DEFAULT now()
);
-- key: `uri:{canonical lot URI or identifier}` or `lot:{lot number}`; named: the identifier of
-- the event that gave the key (shown as the match).
CREATE TABLE epcis_captured_keys (
    key       text NOT NULL,
    event_id  text NOT NULL,
    named     text NOT NULL,
    PRIMARY KEY (key, event_id)
);
