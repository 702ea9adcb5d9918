-- EPCIS capture: see ../postgres/0071_epcis_capture.sql for the meaning of every column.
CREATE TABLE epcis_captured (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    event_time   TEXT NOT NULL,
    action       TEXT,
    biz_step     TEXT,
    disposition  TEXT,
    read_point   TEXT,
    biz_location TEXT,
    source       TEXT,
    sender       TEXT,
    body         TEXT NOT NULL,
    captured_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE epcis_captured_keys (
    key       TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    named     TEXT NOT NULL,
    PRIMARY KEY (key, event_id)
) WITHOUT ROWID;
