-- Query-side indexes (trace, recall, internal trace). Append-only. Mirrors ../postgres/0010.
CREATE INDEX edges_child_cover ON edges (child_id, parent_id, relation, valid_from, valid_to);
CREATE INDEX edges_parent_cover ON edges (parent_id, child_id, relation, valid_from, valid_to);
CREATE INDEX operation_parameters_name_op ON operation_parameters (name, operation_id) WHERE in_spec = 0;
CREATE INDEX operations_completed ON operations (completed_at, id);
CREATE INDEX readings_gateway_ts ON readings (gateway, ts);
