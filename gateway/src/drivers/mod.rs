//! Acquisition drivers: Modbus TCP/RTU, OPC UA, serial barcode / RFID readers.

pub mod config;
