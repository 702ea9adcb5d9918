-- Routes: the operations a part's units must pass, in order, per version. Each version is an
-- event of the aggregator chain (`route_created`, or `route_replaced` while no unit has run on it).
CREATE TABLE routes (
    part        TEXT NOT NULL,
    version     TEXT NOT NULL,
    operations  TEXT NOT NULL,            -- canonical JSON array of the route's operations
    created_at  TIMESTAMPTZ NOT NULL,
    seq         BIGINT NOT NULL REFERENCES aggregator_chain (seq),
    PRIMARY KEY (part, version)
);
CREATE INDEX routes_part_seq ON routes (part, seq);
CREATE INDEX items_work_order ON items (work_order) WHERE kind = 'unit';
