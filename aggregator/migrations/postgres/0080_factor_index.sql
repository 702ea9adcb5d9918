-- The factor index of common-cause analysis (aggregator/src/analytics/factor_index.rs): per hour
-- of first sighting and part, how many units there are and how many of them have each factor,
-- so that a population of millions of units is counted by summing hours instead of walking the
-- genealogy. Append-only migration; mirrored by ../sqlite/0080_factor_index.sql.
--
-- factor_index_hours: the hours built (`hour` = 'YYYY-MM-DDTHH', UTC); `dirty` counts the changes
-- that reached its units since it was built (a build clears what it saw; > 0 = rebuild).
-- Units by first sighting: the hours the index builds, the rest of a population it counts.
CREATE INDEX items_unit_first_seen ON items (first_seen_at) WHERE kind = 'unit';
CREATE TABLE factor_index_hours (
    hour      text PRIMARY KEY,
    built_at  timestamptz NOT NULL DEFAULT now(),
    dirty     bigint NOT NULL DEFAULT 0
);
-- Units of each part first seen in the hour ('' = no part).
CREATE TABLE factor_index_units (
    hour  text NOT NULL,
    part  text NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (hour, part)
);
-- Of those, how many have the factor (kinds as in the analysis: lot, component_lot, supplier, …).
CREATE TABLE factor_index (
    hour    text NOT NULL,
    part    text NOT NULL,
    kind    text NOT NULL,
    factor  text NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (hour, part, kind, factor)
);
-- What changed since: the item whose factors (or whose consumers' factors) may have changed,
-- and for a unit whose first sighting moved, the old one. Written by the triggers below only
-- while the index holds an hour; drained by the index loop (which marks the hours dirty).
CREATE TABLE factor_changes (
    id       bigserial PRIMARY KEY,
    item_id  bigint NOT NULL,
    seen_at  timestamptz
);

-- One statement-level trigger per write (transition tables: one INSERT … SELECT per ingest
-- statement, COPY included), a row-level one for the rare item updates that matter.
CREATE FUNCTION factor_changed_edges() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM factor_index_hours LIMIT 1) THEN
        INSERT INTO factor_changes (item_id)
        SELECT parent_id FROM factor_new WHERE relation IN ('consumed', 'assembled');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER edges_factor_changes AFTER INSERT ON edges
    REFERENCING NEW TABLE AS factor_new FOR EACH STATEMENT EXECUTE FUNCTION factor_changed_edges();

CREATE FUNCTION factor_changed_operations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM factor_index_hours LIMIT 1) THEN
        INSERT INTO factor_changes (item_id) SELECT unit_id FROM factor_new;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER operations_factor_changes AFTER INSERT ON operations
    REFERENCING NEW TABLE AS factor_new FOR EACH STATEMENT EXECUTE FUNCTION factor_changed_operations();

CREATE FUNCTION factor_changed_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM factor_index_hours LIMIT 1) THEN
        INSERT INTO factor_changes (item_id) SELECT id FROM factor_new WHERE kind = 'unit';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER items_factor_changes AFTER INSERT ON items
    REFERENCING NEW TABLE AS factor_new FOR EACH STATEMENT EXECUTE FUNCTION factor_changed_items();

CREATE FUNCTION factor_changed_item() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM factor_index_hours LIMIT 1) THEN
        INSERT INTO factor_changes (item_id, seen_at) VALUES (NEW.id, OLD.first_seen_at);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER item_factor_changes AFTER UPDATE ON items FOR EACH ROW
    WHEN (OLD.supplier IS DISTINCT FROM NEW.supplier
       OR OLD.supplier_batch IS DISTINCT FROM NEW.supplier_batch
       OR OLD.work_order IS DISTINCT FROM NEW.work_order
       OR OLD.part IS DISTINCT FROM NEW.part
       OR OLD.first_seen_at IS DISTINCT FROM NEW.first_seen_at
       OR OLD.ext_id IS DISTINCT FROM NEW.ext_id
       OR OLD.kind IS DISTINCT FROM NEW.kind)
    EXECUTE FUNCTION factor_changed_item();
