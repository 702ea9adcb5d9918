-- Close events (disassembled, unpacked) that arrived before the edge they close (issue #20):
-- kept here and applied when an edge they match is inserted (valid_from <= at), so the
-- genealogy is the same whatever the arrival order.
CREATE TABLE pending_closes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id   INTEGER NOT NULL,
    child_id    INTEGER NOT NULL,
    relation    TEXT NOT NULL,
    at          TEXT NOT NULL,
    reason      TEXT NOT NULL,
    event_id    INTEGER NOT NULL,
    gateway     TEXT NOT NULL
);
CREATE INDEX pending_closes_edge ON pending_closes (parent_id, child_id, relation, at);
