//! Threadline simulators.
