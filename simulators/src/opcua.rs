//! opcua simulator (placeholder).
