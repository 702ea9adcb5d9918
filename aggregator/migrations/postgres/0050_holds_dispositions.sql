-- The aggregator's own hash chain (holds, releases, dispositions) and what it projects to.
-- Chain link: hash = sha256(prev_hash || u32_be(len("aggregator")) || "aggregator" || nil uuid || body),
-- the same definition as the gateways' chains (store/chain.rs), chain id "aggregator".
CREATE TABLE aggregator_chain (
    seq         BIGINT PRIMARY KEY,
    ts          TIMESTAMPTZ NOT NULL,
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL
);

CREATE TABLE holds (
    hold_id        TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    item_id        TEXT NOT NULL,
    reason         TEXT NOT NULL,
    placed_by      TEXT NOT NULL,
    placed_at      TIMESTAMPTZ NOT NULL,
    placed_seq     BIGINT NOT NULL REFERENCES aggregator_chain (seq),
    released_at    TIMESTAMPTZ,
    release_reason TEXT,
    released_by    TEXT,
    released_seq   BIGINT REFERENCES aggregator_chain (seq)
);
CREATE INDEX holds_item ON holds (kind, item_id);
CREATE INDEX holds_active ON holds (released_at);

CREATE TABLE dispositions (
    id          BIGSERIAL PRIMARY KEY,
    serial      TEXT NOT NULL,
    disposition TEXT NOT NULL,
    reason      TEXT NOT NULL,
    decided_by  TEXT NOT NULL,
    decided_at  TIMESTAMPTZ NOT NULL,
    seq         BIGINT NOT NULL REFERENCES aggregator_chain (seq)
);
CREATE INDEX dispositions_serial ON dispositions (serial);
