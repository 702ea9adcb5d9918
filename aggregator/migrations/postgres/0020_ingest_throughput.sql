-- Ingest throughput (issue 6). Append-only: never edit an applied migration.
--
-- 1. Foreign keys of the projection tables go. Every projection row is written by one code path
--    (store::write) in the same transaction as the item upserts and events it points to, with
--    ids taken from those very statements; the per-row foreign-key triggers cost more than the
--    rows themselves (about four trigger probes per trace event). Referential integrity is kept
--    by construction and checked by the conformance suite (`projections_have_no_dangling_ids`).
ALTER TABLE edges DROP CONSTRAINT IF EXISTS edges_parent_id_fkey;
ALTER TABLE edges DROP CONSTRAINT IF EXISTS edges_child_id_fkey;
ALTER TABLE edges DROP CONSTRAINT IF EXISTS edges_event_id_fkey;
ALTER TABLE operations DROP CONSTRAINT IF EXISTS operations_unit_id_fkey;
ALTER TABLE operations DROP CONSTRAINT IF EXISTS operations_event_id_fkey;
ALTER TABLE operation_parameters DROP CONSTRAINT IF EXISTS operation_parameters_operation_id_fkey;
ALTER TABLE operation_materials DROP CONSTRAINT IF EXISTS operation_materials_operation_id_fkey;
ALTER TABLE operation_materials DROP CONSTRAINT IF EXISTS operation_materials_lot_id_fkey;
ALTER TABLE quality_checks DROP CONSTRAINT IF EXISTS quality_checks_unit_id_fkey;
ALTER TABLE quality_checks DROP CONSTRAINT IF EXISTS quality_checks_event_id_fkey;

-- 2. Indexes that others made redundant: the covering edge indexes (0010) lead with the same
--    column; "parameter X out of spec" uses the partial (name, operation_id) index and
--    "parameter X" probes by operation id.
DROP INDEX IF EXISTS edges_parent;
DROP INDEX IF EXISTS edges_child;
DROP INDEX IF EXISTS operation_parameters_name;

-- 3. Readings: range-partitioned by time, one partition per UTC day (`readings_YYYYMMDD`) plus a
--    default partition. Retention drops whole days; the indexes being written stay small. The
--    key includes `ts` (a partitioned table's unique key must hold the partition key); a
--    re-sent reading carries the same ts, so (gateway, epoch, seq) stays unique in practice and
--    the writer deduplicates on it before copying.
ALTER TABLE readings RENAME TO readings_unpartitioned;
ALTER TABLE readings_unpartitioned RENAME CONSTRAINT readings_pkey TO readings_unpartitioned_pkey;
ALTER INDEX readings_tag_ts RENAME TO readings_unpartitioned_tag_ts;
ALTER INDEX readings_gateway_ts RENAME TO readings_unpartitioned_gateway_ts;

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
    PRIMARY KEY (gateway, epoch, seq, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX readings_tag_ts ON readings (tag, ts);
CREATE INDEX readings_gateway_ts ON readings (gateway, ts);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

-- Creates the partition of `day` if missing; false (with a notice) when it cannot, e.g. because
-- `readings_default` already holds rows of that day — they then keep going there.
CREATE FUNCTION threadline_ensure_readings_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'readings_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN true;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                       part, day::text || ' 00:00:00+00', (day + 1)::text || ' 00:00:00+00');
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'threadline: partition % not created (%); its rows go to readings_default',
                     part, SQLERRM;
        RETURN false;
    END;
    RETURN true;
END
$$;

SELECT threadline_ensure_readings_partition(d)
FROM (SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date AS d FROM readings_unpartitioned) days;
INSERT INTO readings SELECT * FROM readings_unpartitioned;
DROP TABLE readings_unpartitioned;
