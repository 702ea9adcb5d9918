-- Query-side indexes (trace, recall, internal trace). Append-only.
-- Unit report and trace look items up by (kind, ext_id) — covered by the UNIQUE constraint.
-- Recall walks child → parent: the covering index lets the recursive step read only the index.
CREATE INDEX edges_child_cover ON edges (child_id) INCLUDE (parent_id, relation, valid_from, valid_to);
CREATE INDEX edges_parent_cover ON edges (parent_id) INCLUDE (child_id, relation, valid_from, valid_to);
-- Internal trace: "operations whose parameter X is out of spec" joins by operation id.
CREATE INDEX operation_parameters_name_op ON operation_parameters (name, operation_id) WHERE NOT in_spec;
CREATE INDEX operations_completed ON operations (completed_at, id);
CREATE INDEX readings_gateway_ts ON readings (gateway, ts);
