-- EPCIS 2.0 export: queries by event time (GE_eventTime / LT_eventTime) and the per-unit
-- document's lookup of the unit's start event (by its first_seen_at) read events by `ts`.
CREATE INDEX events_ts ON events (ts);
