//! Linux evdev `struct input_event` records, as read from `/dev/input/event*`:
//! `struct timeval time; __u16 type; __u16 code; __s32 value;` in native byte order — 24 bytes
//! on 64-bit targets (`time` is two `long`s of 8 bytes), 16 on 32-bit ones.
//!
//! [`InputEvent::encode`] is the inverse, for tests and simulators that stand in for a device.

/// `EV_SYN`: synchronization events.
pub const EV_SYN: u16 = 0x00;
/// `EV_KEY`: key presses and releases.
pub const EV_KEY: u16 = 0x01;
/// `SYN_REPORT`: the end of one batch of events.
pub const SYN_REPORT: u16 = 0;
/// `SYN_DROPPED`: the kernel's buffer for this reader overflowed; events were lost.
pub const SYN_DROPPED: u16 = 3;

/// `value` of an `EV_KEY` event: released.
pub const RELEASED: i32 = 0;
/// `value` of an `EV_KEY` event: pressed.
pub const PRESSED: i32 = 1;
/// `value` of an `EV_KEY` event: auto-repeat while held.
pub const REPEATED: i32 = 2;

/// C `long` of the target (the fields of `struct timeval` in `input_event`).
#[cfg(target_pointer_width = "64")]
type CLong = i64;
#[cfg(not(target_pointer_width = "64"))]
type CLong = i32;

const LONG: usize = std::mem::size_of::<CLong>();

/// Bytes of one `struct input_event` on this target.
pub const EVENT_SIZE: usize = 2 * LONG + 8;

/// One input event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    /// Kernel timestamp: seconds and microseconds.
    pub sec: i64,
    pub usec: i64,
    /// `type`: [`EV_KEY`], [`EV_SYN`], …
    pub kind: u16,
    /// Key code (`KEY_*`) for [`EV_KEY`].
    pub code: u16,
    /// [`PRESSED`], [`RELEASED`] or [`REPEATED`] for [`EV_KEY`].
    pub value: i32,
}

impl InputEvent {
    /// A key event at `time_us` microseconds.
    pub fn key(code: u16, value: i32, time_us: i64) -> InputEvent {
        InputEvent {
            sec: time_us.div_euclid(1_000_000),
            usec: time_us.rem_euclid(1_000_000),
            kind: EV_KEY,
            code,
            value,
        }
    }

    /// A `SYN_REPORT` (or, with `code`, another `EV_SYN` event) at `time_us`.
    pub fn syn(code: u16, time_us: i64) -> InputEvent {
        InputEvent {
            kind: EV_SYN,
            value: 0,
            ..InputEvent::key(code, 0, time_us)
        }
    }

    /// The timestamp in microseconds.
    pub fn time_us(&self) -> i64 {
        self.sec.saturating_mul(1_000_000).saturating_add(self.usec)
    }

    /// Decodes one record of exactly [`EVENT_SIZE`] bytes.
    pub fn decode(b: &[u8; EVENT_SIZE]) -> InputEvent {
        let long = |at: usize| {
            let mut x = [0u8; LONG];
            x.copy_from_slice(&b[at..at + LONG]);
            from_long(CLong::from_ne_bytes(x))
        };
        let t = 2 * LONG;
        InputEvent {
            sec: long(0),
            usec: long(LONG),
            kind: u16::from_ne_bytes([b[t], b[t + 1]]),
            code: u16::from_ne_bytes([b[t + 2], b[t + 3]]),
            value: i32::from_ne_bytes([b[t + 4], b[t + 5], b[t + 6], b[t + 7]]),
        }
    }

    /// The record as the kernel would write it.
    pub fn encode(&self) -> [u8; EVENT_SIZE] {
        let mut b = [0u8; EVENT_SIZE];
        b[..LONG].copy_from_slice(&to_long(self.sec).to_ne_bytes());
        b[LONG..2 * LONG].copy_from_slice(&to_long(self.usec).to_ne_bytes());
        let t = 2 * LONG;
        b[t..t + 2].copy_from_slice(&self.kind.to_ne_bytes());
        b[t + 2..t + 4].copy_from_slice(&self.code.to_ne_bytes());
        b[t + 4..t + 8].copy_from_slice(&self.value.to_ne_bytes());
        b
    }
}

#[cfg(target_pointer_width = "64")]
fn to_long(x: i64) -> CLong {
    x
}
#[cfg(not(target_pointer_width = "64"))]
fn to_long(x: i64) -> CLong {
    CLong::try_from(x).unwrap_or(CLong::MAX)
}
#[cfg(target_pointer_width = "64")]
fn from_long(x: CLong) -> i64 {
    x
}
#[cfg(not(target_pointer_width = "64"))]
fn from_long(x: CLong) -> i64 {
    i64::from(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_the_kernel_layout() {
        assert_eq!(
            EVENT_SIZE,
            if cfg!(target_pointer_width = "64") {
                24
            } else {
                16
            }
        );
        let e = InputEvent::key(30, PRESSED, 1_700_000_000_123_456);
        assert_eq!((e.sec, e.usec), (1_700_000_000, 123_456));
        let b = e.encode();
        let t = 2 * LONG;
        assert_eq!(&b[t..t + 2], &EV_KEY.to_ne_bytes());
        assert_eq!(&b[t + 2..t + 4], &30u16.to_ne_bytes());
        assert_eq!(&b[t + 4..], &1i32.to_ne_bytes());
        assert_eq!(InputEvent::decode(&b), e);
        assert_eq!(e.time_us(), 1_700_000_000_123_456);
        let s = InputEvent::syn(SYN_DROPPED, 5);
        assert_eq!(InputEvent::decode(&s.encode()), s);
    }
}
