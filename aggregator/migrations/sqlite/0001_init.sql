-- Threadline aggregator schema, SQLite: the same tables, columns and meaning as
-- ../postgres/0001_init.sql (read that file for the comments). Type mapping: bigserial → INTEGER
-- PRIMARY KEY (rowid, increasing), timestamptz → TEXT (RFC 3339 as sqlx writes chrono
-- DateTime<Utc>), uuid → TEXT (hyphenated lowercase), bytea → BLOB, jsonb → TEXT (JSON),
-- boolean → INTEGER 0/1.

CREATE TABLE gateways (
    id              TEXT PRIMARY KEY,
    plant           TEXT NOT NULL DEFAULT '',
    line            TEXT NOT NULL DEFAULT '',
    state           TEXT NOT NULL DEFAULT 'unknown',
    state_since     TEXT,
    status          TEXT,
    buffer_depth    INTEGER NOT NULL DEFAULT 0,
    last_record_at  TEXT,
    last_seen_at    TEXT
);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway     TEXT NOT NULL,
    epoch       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    ts          TEXT NOT NULL,
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL,
    UNIQUE (gateway, epoch, seq)
);
CREATE INDEX events_gateway_id ON events (gateway, id);

CREATE TABLE items (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    ext_id          TEXT NOT NULL,
    part            TEXT,
    placeholder     INTEGER NOT NULL DEFAULT 1,
    supplier        TEXT,
    supplier_batch  TEXT,
    qty             REAL,
    work_order      TEXT,
    line            TEXT,
    level           TEXT,
    customer        TEXT,
    shipped_at      TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    first_seen_at   TEXT,
    UNIQUE (kind, ext_id)
);

CREATE TABLE edges (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id   INTEGER NOT NULL REFERENCES items (id),
    child_id    INTEGER NOT NULL REFERENCES items (id),
    relation    TEXT NOT NULL,
    qty         REAL,
    station     TEXT,
    valid_from  TEXT NOT NULL,
    valid_to    TEXT,
    closed_reason TEXT,
    event_id    INTEGER REFERENCES events (id)
);
CREATE INDEX edges_parent ON edges (parent_id);
CREATE INDEX edges_child ON edges (child_id);

CREATE TABLE work_orders (
    id          TEXT PRIMARY KEY,
    part        TEXT,
    qty         REAL,
    line        TEXT,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE operations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id      INTEGER NOT NULL REFERENCES items (id),
    station      TEXT NOT NULL,
    operation    TEXT NOT NULL,
    equipment    TEXT,
    operator     TEXT,
    recipe       TEXT,
    started_at   TEXT,
    completed_at TEXT NOT NULL,
    result       TEXT NOT NULL,
    defect_code  TEXT,
    out_of_spec  INTEGER NOT NULL DEFAULT 0,
    environment  TEXT NOT NULL DEFAULT '[]',
    gateway      TEXT NOT NULL,
    event_id     INTEGER REFERENCES events (id)
);
CREATE INDEX operations_unit ON operations (unit_id);
CREATE INDEX operations_station_time ON operations (station, completed_at);
CREATE INDEX operations_equipment_time ON operations (equipment, completed_at);
CREATE INDEX operations_operator_time ON operations (operator, completed_at);

CREATE TABLE operation_parameters (
    operation_id INTEGER NOT NULL REFERENCES operations (id),
    name         TEXT NOT NULL,
    value_num    REAL,
    value_text   TEXT,
    unit         TEXT,
    lsl          REAL,
    usl          REAL,
    in_spec      INTEGER NOT NULL
);
CREATE INDEX operation_parameters_op ON operation_parameters (operation_id);
CREATE INDEX operation_parameters_name ON operation_parameters (name, in_spec);

CREATE TABLE operation_materials (
    operation_id INTEGER NOT NULL REFERENCES operations (id),
    lot_id       INTEGER NOT NULL REFERENCES items (id),
    qty          REAL NOT NULL
);
CREATE INDEX operation_materials_op ON operation_materials (operation_id);
CREATE INDEX operation_materials_lot ON operation_materials (lot_id);

CREATE TABLE quality_checks (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id        INTEGER NOT NULL REFERENCES items (id),
    characteristic TEXT NOT NULL,
    value_num      REAL,
    value_text     TEXT,
    unit_of_measure TEXT,
    lsl            REAL,
    usl            REAL,
    result         TEXT NOT NULL,
    station        TEXT,
    operator       TEXT,
    checked_at     TEXT NOT NULL,
    event_id       INTEGER REFERENCES events (id)
);
CREATE INDEX quality_checks_unit ON quality_checks (unit_id);

CREATE TABLE readings (
    gateway    TEXT NOT NULL,
    epoch      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    ts         TEXT NOT NULL,
    device     TEXT NOT NULL,
    tag        TEXT NOT NULL,
    value_num  REAL,
    value_text TEXT,
    unit       TEXT,
    quality    TEXT NOT NULL,
    error      TEXT,
    PRIMARY KEY (gateway, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX readings_tag_ts ON readings (tag, ts);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    topic       TEXT NOT NULL,
    gateway     TEXT,
    reason      TEXT NOT NULL,
    kind        TEXT NOT NULL DEFAULT '',        -- machine-readable reason (metrics label): oversized, malformed_envelope, …
    payload     BLOB NOT NULL
);
