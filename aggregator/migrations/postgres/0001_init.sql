-- Threadline aggregator schema, PostgreSQL. Append-only: never edit an applied migration.
--
-- The event log (`events`) is the source of truth; every other table is a projection of it,
-- written in the same transaction as the events it derives from.
-- Genealogy edges point from the containing/consuming item (parent) to what it contains/consumed
-- (child): unit → lot (consumed), unit → unit/lot (assembled), container → unit/container
-- (packed), shipment → container/unit (shipped). Backward trace follows parent → child,
-- forward trace (recall) follows child → parent.

CREATE TABLE gateways (
    id              text PRIMARY KEY,
    plant           text NOT NULL DEFAULT '',
    line            text NOT NULL DEFAULT '',
    state           text NOT NULL DEFAULT 'unknown',   -- online | offline | unknown (from …/status)
    state_since     timestamptz,
    status          jsonb,                             -- the last status message as received
    buffer_depth    bigint NOT NULL DEFAULT 0,
    last_record_at  timestamptz,                       -- floor time of the newest record
    last_seen_at    timestamptz                        -- when the aggregator last heard from it
);

-- The hash-chained log of trace events (readings live in `readings`). One chain per gateway,
-- in `id` order: hash = sha256(prev_hash || canonical record bytes with gateway and epoch).
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    gateway     text NOT NULL,
    epoch       uuid NOT NULL,
    seq         bigint NOT NULL,
    ts          timestamptz NOT NULL,
    type        text NOT NULL,
    body        text NOT NULL,                         -- canonical JSON of the record
    received_at timestamptz NOT NULL DEFAULT now(),
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL,
    UNIQUE (gateway, epoch, seq)
);
CREATE INDEX events_gateway_id ON events (gateway, id);

-- Every traceable thing: units, lots, containers (cases, pallets), shipments.
-- A placeholder is an id seen in a trace event before its master data arrived.
CREATE TABLE items (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL,                     -- unit | lot | container | shipment
    ext_id          text NOT NULL,                     -- the serial / lot number / SSCC / shipment id
    part            text,
    placeholder     boolean NOT NULL DEFAULT true,
    supplier        text,                              -- lots
    supplier_batch  text,                              -- lots
    qty             double precision,                  -- lots: received quantity
    work_order      text,                              -- units
    line            text,                              -- units: line that started it
    level           text,                              -- containers: case | pallet
    customer        text,                              -- shipments
    shipped_at      timestamptz,                       -- shipments
    created_at      timestamptz NOT NULL DEFAULT now(),
    first_seen_at   timestamptz,                       -- floor time of the first event naming it
    UNIQUE (kind, ext_id)
);

CREATE TABLE edges (
    id          bigserial PRIMARY KEY,
    parent_id   bigint NOT NULL REFERENCES items (id),
    child_id    bigint NOT NULL REFERENCES items (id),
    relation    text NOT NULL,                         -- consumed | assembled | packed | shipped
    qty         double precision,
    station     text,
    valid_from  timestamptz NOT NULL,
    valid_to    timestamptz,                           -- set by disassembly / unpacking; never deleted
    closed_reason text,
    event_id    bigint REFERENCES events (id)
);
CREATE INDEX edges_parent ON edges (parent_id);
CREATE INDEX edges_child ON edges (child_id);

CREATE TABLE work_orders (
    id          text PRIMARY KEY,
    part        text,
    qty         double precision,
    line        text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE operations (
    id           bigserial PRIMARY KEY,
    unit_id      bigint NOT NULL REFERENCES items (id),
    station      text NOT NULL,
    operation    text NOT NULL,
    equipment    text,
    operator     text,
    recipe       text,
    started_at   timestamptz,
    completed_at timestamptz NOT NULL,
    result       text NOT NULL,                         -- pass | fail
    defect_code  text,
    out_of_spec  boolean NOT NULL DEFAULT false,         -- any parameter outside its limits
    environment  jsonb NOT NULL DEFAULT '[]',
    gateway      text NOT NULL,
    event_id     bigint REFERENCES events (id)
);
CREATE INDEX operations_unit ON operations (unit_id);
CREATE INDEX operations_station_time ON operations (station, completed_at);
CREATE INDEX operations_equipment_time ON operations (equipment, completed_at);
CREATE INDEX operations_operator_time ON operations (operator, completed_at);

CREATE TABLE operation_parameters (
    operation_id bigint NOT NULL REFERENCES operations (id),
    name         text NOT NULL,
    value_num    double precision,
    value_text   text,
    unit         text,
    lsl          double precision,
    usl          double precision,
    in_spec      boolean NOT NULL
);
CREATE INDEX operation_parameters_op ON operation_parameters (operation_id);
CREATE INDEX operation_parameters_name ON operation_parameters (name, in_spec);

CREATE TABLE operation_materials (
    operation_id bigint NOT NULL REFERENCES operations (id),
    lot_id       bigint NOT NULL REFERENCES items (id),
    qty          double precision NOT NULL
);
CREATE INDEX operation_materials_op ON operation_materials (operation_id);
CREATE INDEX operation_materials_lot ON operation_materials (lot_id);

CREATE TABLE quality_checks (
    id             bigserial PRIMARY KEY,
    unit_id        bigint NOT NULL REFERENCES items (id),
    characteristic text NOT NULL,
    value_num      double precision,
    value_text     text,
    unit_of_measure text,
    lsl            double precision,
    usl            double precision,
    result         text NOT NULL,
    station        text,
    operator       text,
    checked_at     timestamptz NOT NULL,
    event_id       bigint REFERENCES events (id)
);
CREATE INDEX quality_checks_unit ON quality_checks (unit_id);

-- Time series. Idempotent by (gateway, epoch, seq) like events, but not hash-chained.
CREATE TABLE readings (
    gateway    text NOT NULL,
    epoch      uuid NOT NULL,
    seq        bigint NOT NULL,
    ts         timestamptz NOT NULL,
    device     text NOT NULL,
    tag        text NOT NULL,
    value_num  double precision,
    value_text text,
    unit       text,
    quality    text NOT NULL,
    error      text,
    PRIMARY KEY (gateway, epoch, seq)
);
CREATE INDEX readings_tag_ts ON readings (tag, ts);

-- Payloads that could not be used, with the reason; never silently dropped.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    gateway     text,
    reason      text NOT NULL,
    kind        text NOT NULL DEFAULT '',        -- machine-readable reason (metrics label): oversized, malformed_envelope, …
    payload     bytea NOT NULL
);
