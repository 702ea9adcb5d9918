-- Dead letters once: the same payload on the same topic is one row, counted (issue #20).
-- payload_hash = SHA-256 of topic, a 0 byte, payload; NULL for rows written before this
-- migration (a unique index lets NULLs repeat). last_received_at: the latest occurrence.
ALTER TABLE dead_letters ADD COLUMN payload_hash BLOB;
ALTER TABLE dead_letters ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE dead_letters ADD COLUMN last_received_at TEXT;
CREATE UNIQUE INDEX dead_letters_payload_hash ON dead_letters (payload_hash);
