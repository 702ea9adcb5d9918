-- The factor index of common-cause analysis: see ../postgres/0080_factor_index.sql for the
-- meaning of every table. SQLite has row triggers only (cheap: no function call).
-- Units by first sighting: the hours the index builds, the rest of a population it counts.
CREATE INDEX items_unit_first_seen ON items (first_seen_at) WHERE kind = 'unit';
CREATE TABLE factor_index_hours (
    hour      TEXT PRIMARY KEY,
    built_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    dirty     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE factor_index_units (
    hour  TEXT NOT NULL,
    part  TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (hour, part)
);
CREATE TABLE factor_index (
    hour    TEXT NOT NULL,
    part    TEXT NOT NULL,
    kind    TEXT NOT NULL,
    factor  TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (hour, part, kind, factor)
);
CREATE TABLE factor_changes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id  INTEGER NOT NULL,
    seen_at  TEXT
);

CREATE TRIGGER edges_factor_changes AFTER INSERT ON edges
    WHEN NEW.relation IN ('consumed', 'assembled') AND EXISTS (SELECT 1 FROM factor_index_hours)
BEGIN
    INSERT INTO factor_changes (item_id) VALUES (NEW.parent_id);
END;
CREATE TRIGGER operations_factor_changes AFTER INSERT ON operations
    WHEN EXISTS (SELECT 1 FROM factor_index_hours)
BEGIN
    INSERT INTO factor_changes (item_id) VALUES (NEW.unit_id);
END;
CREATE TRIGGER items_factor_changes AFTER INSERT ON items
    WHEN NEW.kind = 'unit' AND EXISTS (SELECT 1 FROM factor_index_hours)
BEGIN
    INSERT INTO factor_changes (item_id) VALUES (NEW.id);
END;
CREATE TRIGGER item_factor_changes AFTER UPDATE ON items
    WHEN (OLD.supplier IS NOT NEW.supplier
       OR OLD.supplier_batch IS NOT NEW.supplier_batch
       OR OLD.work_order IS NOT NEW.work_order
       OR OLD.part IS NOT NEW.part
       OR OLD.first_seen_at IS NOT NEW.first_seen_at
       OR OLD.ext_id IS NOT NEW.ext_id
       OR OLD.kind IS NOT NEW.kind)
     AND EXISTS (SELECT 1 FROM factor_index_hours)
BEGIN
    INSERT INTO factor_changes (item_id, seen_at) VALUES (NEW.id, OLD.first_seen_at);
END;
