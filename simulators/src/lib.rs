//! Threadline simulators: PLCs (Modbus TCP/RTU, OPC UA), pseudo-terminal scanners, a plant with
//! ground truth, the demo, and benchmark data generators.

pub mod datagen;
pub mod modbus;
pub mod opcua;
pub mod plant;
pub mod scanner;
