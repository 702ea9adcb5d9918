//! The durable SQLite outbox.
