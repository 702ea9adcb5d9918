//! modbus simulator (placeholder).
