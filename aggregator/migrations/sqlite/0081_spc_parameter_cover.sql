-- SPC reads one parameter of every operation of a station in a window (analytics/spc.rs): with
-- this index each value is read from the index alone, ~100 index pages for 10,000 points instead
-- of one table page per operation (the parameters of the other operations lie in between).
-- It replaces (name, in_spec), which it covers. SQLite only: PostgreSQL dropped that index for
-- ingest throughput (0020) and reads these rows fast enough through operation_parameters_op.
CREATE INDEX IF NOT EXISTS operation_parameters_name_cover
    ON operation_parameters (name, operation_id, value_num, lsl, usl, in_spec);
DROP INDEX IF EXISTS operation_parameters_name;
