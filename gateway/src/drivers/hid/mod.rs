//! USB HID barcode / RFID scanners in keyboard mode, read through Linux evdev.
//!
//! Most handheld scanners ship as a USB keyboard: they type the code as key presses. The
//! gateway reads the scanner's own evdev node (`/dev/input/by-id/…-event-kbd`), grabs it
//! exclusively (EVIOCGRAB) so the keystrokes reach no console or window, and decodes key codes
//! under the scanner's keyboard layout back into the code it read — including the GS1 group
//! separator, so a GS1-128 / DataMatrix element string is the same string a serial reader
//! delivers. From there on the path is the serial reader's (`drivers::reader`): the same line
//! rules, `max_line_len`, `dedup_ms`, `scan_rejected` for garbage, the same station logic.
//!
//! - [`event`]: the `input_event` record format;
//! - [`keys`]: the key codes;
//! - [`layout`]: which key types which character under `us`, `de`, `fr`;
//! - [`decode`]: key events → lines (modifiers, terminator, GS, ALT+nnnn, the per-character
//!   timeout);
//! - `device`: the task — open, grab, read, reopen and re-grab on replug.
//!
//! The grab is the one `ioctl` the gateway needs; the workspace forbids `unsafe`, so it goes
//! through the `input-linux` crate's safe `EvdevHandle::grab`, which wraps exactly that call.

pub mod decode;
mod device;
pub mod event;
pub mod keys;
pub mod layout;

pub use decode::KeyDecoder;
pub use device::run_scanner;
pub use event::{EVENT_SIZE, InputEvent};
