//! scanner simulator (placeholder).
