-- Close events (disassembled, unpacked) that arrived before the edge they close (issue #20):
-- kept here and applied when an edge they match is inserted (valid_from <= at), so the
-- genealogy is the same whatever the arrival order.
CREATE TABLE pending_closes (
    id          bigserial PRIMARY KEY,
    parent_id   bigint NOT NULL,
    child_id    bigint NOT NULL,
    relation    text NOT NULL,
    at          timestamptz NOT NULL,
    reason      text NOT NULL,
    event_id    bigint NOT NULL,
    gateway     text NOT NULL
);
CREATE INDEX pending_closes_edge ON pending_closes (parent_id, child_id, relation, at);
