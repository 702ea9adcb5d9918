//! MQTT intake → validation → batched, idempotent, hash-chained writes → acks.

/// Ingest health and counters, shared with the API (`/healthz`, `/metrics`).
#[derive(Debug, Default)]
pub struct IngestStats {}
