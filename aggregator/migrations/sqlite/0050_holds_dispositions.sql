-- The aggregator's own hash chain (holds, releases, dispositions) and what it projects to.
-- Chain link: hash = sha256(prev_hash || u32_be(len("aggregator")) || "aggregator" || nil uuid || body),
-- the same definition as the gateways' chains (store/chain.rs), chain id "aggregator".
CREATE TABLE aggregator_chain (
    seq         INTEGER PRIMARY KEY,
    ts          TEXT NOT NULL,
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);

CREATE TABLE holds (
    hold_id        TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    item_id        TEXT NOT NULL,
    reason         TEXT NOT NULL,
    placed_by      TEXT NOT NULL,
    placed_at      TEXT NOT NULL,
    placed_seq     INTEGER NOT NULL REFERENCES aggregator_chain (seq),
    released_at    TEXT,
    release_reason TEXT,
    released_by    TEXT,
    released_seq   INTEGER REFERENCES aggregator_chain (seq)
);
CREATE INDEX holds_item ON holds (kind, item_id);
CREATE INDEX holds_active ON holds (released_at);

CREATE TABLE dispositions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    serial      TEXT NOT NULL,
    disposition TEXT NOT NULL,
    reason      TEXT NOT NULL,
    decided_by  TEXT NOT NULL,
    decided_at  TEXT NOT NULL,
    seq         INTEGER NOT NULL REFERENCES aggregator_chain (seq)
);
CREATE INDEX dispositions_serial ON dispositions (serial);
