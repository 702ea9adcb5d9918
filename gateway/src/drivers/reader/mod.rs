//! What every barcode / RFID reader shares, whatever its link (`drivers::serial` for serial
//! ports, `drivers::hid` for USB HID keyboard-mode scanners): the `[[scanner]]` table, the
//! bounded assembly of a line and what makes it a code or a rejected scan, de-duplication,
//! delivery to the station and the reopen backoff. A link only turns its input into lines; from
//! there on a scan from a HID scanner is indistinguishable from one read on a serial port.

pub mod config;
mod lines;
mod output;

pub use lines::{Line, LineBuffer};
pub use output::{Reopen, ScanOutput};
