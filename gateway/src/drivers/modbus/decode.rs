//! Register words → tag values.
//!
//! Byte-order convention (the letters name the bytes of the value, A = most significant):
//!
//! | order | 16 bit | 32 bit (2 regs) | 64 bit (4 regs) | meaning |
//! |---|---|---|---|---|
//! | `ABCD` | AB | AB CD | AB CD EF GH | big-endian words, big-endian bytes (Modbus standard) |
//! | `CDAB` | AB | CD AB | GH EF CD AB | word order reversed, bytes in a word big-endian |
//! | `BADC` | BA | BA DC | BA DC FE HG | words big-endian, bytes in each word swapped |
//! | `DCBA` | BA | DC BA | HG FE DC BA | fully little-endian |
//!
//! So: `CDAB` = "reverse the words", `BADC` = "swap the bytes of each word", `DCBA` = both. The same
//! two operations are applied to 16-bit types (only the byte swap can matter there) and to strings
//! (`BADC`/`DCBA` swap the two characters of each register; word order of strings is never changed).

use threadline_shared::event::TagValue;

use crate::drivers::config::{ByteOrder, DataType};

/// Registers a value of this type occupies (`length` for strings; bits count as one).
pub fn width(ty: DataType, length: Option<u16>) -> u16 {
    match ty {
        DataType::Bool | DataType::U16 | DataType::I16 => 1,
        DataType::U32 | DataType::I32 | DataType::F32 => 2,
        DataType::U64 | DataType::I64 | DataType::F64 => 4,
        DataType::String => length.unwrap_or(1).max(1),
    }
}

/// True when the order reverses the word sequence.
fn word_swap(order: ByteOrder) -> bool {
    matches!(order, ByteOrder::CDAB | ByteOrder::DCBA)
}

/// True when the order swaps the two bytes inside each word.
fn byte_swap(order: ByteOrder) -> bool {
    matches!(order, ByteOrder::BADC | ByteOrder::DCBA)
}

/// The value's bytes, most significant first, from `N / 2` registers as read.
fn to_be_bytes<const N: usize>(regs: &[u16], order: ByteOrder) -> [u8; N] {
    let mut out = [0u8; N];
    let words = N / 2;
    for i in 0..words {
        let w = if word_swap(order) {
            regs[words - 1 - i]
        } else {
            regs[i]
        };
        let w = if byte_swap(order) { w.swap_bytes() } else { w };
        out[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Registers as they must be written so that a reader with `order` sees `bytes` (the inverse of
/// decoding; used by the simulator tests and the probe).
pub fn encode_be_bytes(bytes: &[u8], order: ByteOrder) -> Vec<u16> {
    let words = bytes.len() / 2;
    let mut regs = vec![0u16; words];
    for i in 0..words {
        let w = u16::from_be_bytes([bytes[2 * i], bytes[2 * i + 1]]);
        let w = if byte_swap(order) { w.swap_bytes() } else { w };
        let at = if word_swap(order) { words - 1 - i } else { i };
        regs[at] = w;
    }
    regs
}

/// A value before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
}

/// Decodes a numeric / bool type from its registers (`regs.len() >= width`).
/// Returns `None` when too few registers were supplied (a planner bug, never a panic).
pub fn decode_raw(ty: DataType, order: ByteOrder, regs: &[u16]) -> Option<Raw> {
    let need = usize::from(width(ty, None));
    if regs.len() < need {
        return None;
    }
    Some(match ty {
        DataType::Bool => Raw::Bool(regs[0] != 0),
        DataType::U16 => Raw::UInt(u64::from(u16::from_be_bytes(to_be_bytes::<2>(regs, order)))),
        DataType::I16 => Raw::Int(i64::from(i16::from_be_bytes(to_be_bytes::<2>(regs, order)))),
        DataType::U32 => Raw::UInt(u64::from(u32::from_be_bytes(to_be_bytes::<4>(regs, order)))),
        DataType::I32 => Raw::Int(i64::from(i32::from_be_bytes(to_be_bytes::<4>(regs, order)))),
        DataType::F32 => {
            let f = f32::from_be_bytes(to_be_bytes::<4>(regs, order));
            Raw::Float(crate::drivers::f32_to_f64(f))
        }
        DataType::U64 => Raw::UInt(u64::from_be_bytes(to_be_bytes::<8>(regs, order))),
        DataType::I64 => Raw::Int(i64::from_be_bytes(to_be_bytes::<8>(regs, order))),
        DataType::F64 => Raw::Float(f64::from_be_bytes(to_be_bytes::<8>(regs, order))),
        DataType::String => return None,
    })
}

/// Decodes a string of `regs.len()` registers: two ASCII characters per register, high byte
/// first (swapped for `BADC`/`DCBA`); trailing NULs and spaces are trimmed; invalid UTF-8 is
/// replaced rather than refused (an engineer sees the garbage and fixes the address).
pub fn decode_string(regs: &[u16], order: ByteOrder) -> String {
    let mut bytes = Vec::with_capacity(regs.len() * 2);
    for &w in regs {
        let w = if byte_swap(order) { w.swap_bytes() } else { w };
        bytes.extend_from_slice(&w.to_be_bytes());
    }
    // Everything after the first NUL is padding.
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(nul);
    }
    String::from_utf8_lossy(&bytes)
        .trim_end_matches([' ', '\0'])
        .to_owned()
}

/// How to turn one tag's registers into its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decoder {
    pub ty: DataType,
    pub order: ByteOrder,
    pub length: u16,
    pub scale: f64,
    pub offset: f64,
}

impl Decoder {
    /// Registers (or bits) the tag occupies.
    pub fn width(&self) -> u16 {
        width(self.ty, Some(self.length))
    }

    /// True when scale / offset change the value (the result is then always a float).
    fn scaled(&self) -> bool {
        self.scale != 1.0 || self.offset != 0.0
    }

    /// The tag value from its registers.
    pub fn decode_regs(&self, regs: &[u16]) -> Option<TagValue> {
        if self.ty == DataType::String {
            let n = usize::from(self.length);
            return regs
                .get(..n)
                .map(|r| TagValue::Text(decode_string(r, self.order)));
        }
        decode_raw(self.ty, self.order, regs).map(|raw| self.apply(raw))
    }

    /// The tag value of a single bit (coil / discrete input).
    pub fn decode_bit(&self, bit: bool) -> TagValue {
        self.apply(Raw::Bool(bit))
    }

    fn apply(&self, raw: Raw) -> TagValue {
        if self.scaled() {
            let x = match raw {
                // A bool stays a bool: scaling a switch is a config slip, not a measurement.
                Raw::Bool(b) => return TagValue::Bool(b),
                Raw::Int(i) => i as f64,
                Raw::UInt(u) => u as f64,
                Raw::Float(f) => f,
            };
            return TagValue::Float(x * self.scale + self.offset);
        }
        match raw {
            Raw::Bool(b) => TagValue::Bool(b),
            Raw::Int(i) => TagValue::Int(i),
            Raw::UInt(u) => TagValue::UInt(u),
            Raw::Float(f) => TagValue::Float(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ByteOrder::*;
    use DataType::*;

    const ORDERS: [ByteOrder; 4] = [ABCD, CDAB, BADC, DCBA];

    fn dec(ty: DataType, order: ByteOrder) -> Decoder {
        Decoder {
            ty,
            order,
            length: 0,
            scale: 1.0,
            offset: 0.0,
        }
    }

    #[test]
    fn f32_known_patterns_in_every_order() {
        // 123.456f32 = 0x42F6E979 → bytes A=42 B=F6 C=E9 D=79.
        let cases = [
            (ABCD, [0x42F6, 0xE979]),
            (CDAB, [0xE979, 0x42F6]),
            (BADC, [0xF642, 0x79E9]),
            (DCBA, [0x79E9, 0xF642]),
        ];
        for (order, regs) in cases {
            let v = dec(F32, order).decode_regs(&regs);
            // Carried as the decimal the PLC engineer wrote, not the widened binary value.
            assert_eq!(v, Some(TagValue::Float(123.456)), "{order:?}");
            assert_eq!(encode_be_bytes(&123.456f32.to_be_bytes(), order), regs);
        }
    }

    #[test]
    fn i32_u32_known_patterns() {
        // -2i32 = 0xFFFFFFFE.
        let cases = [
            (ABCD, [0xFFFF, 0xFFFE]),
            (CDAB, [0xFFFE, 0xFFFF]),
            (BADC, [0xFFFF, 0xFEFF]),
            (DCBA, [0xFEFF, 0xFFFF]),
        ];
        for (order, regs) in cases {
            assert_eq!(dec(I32, order).decode_regs(&regs), Some(TagValue::Int(-2)));
            assert_eq!(
                dec(U32, order).decode_regs(&regs),
                Some(TagValue::UInt(0xFFFF_FFFE))
            );
        }
        // 0x12345678.
        let cases = [
            (ABCD, [0x1234, 0x5678]),
            (CDAB, [0x5678, 0x1234]),
            (BADC, [0x3412, 0x7856]),
            (DCBA, [0x7856, 0x3412]),
        ];
        for (order, regs) in cases {
            assert_eq!(
                dec(U32, order).decode_regs(&regs),
                Some(TagValue::UInt(0x1234_5678)),
                "{order:?}"
            );
        }
    }

    #[test]
    fn sixty_four_bit_known_patterns() {
        // 0x0102030405060708: A=01 … H=08.
        let cases = [
            (ABCD, [0x0102, 0x0304, 0x0506, 0x0708]),
            (CDAB, [0x0708, 0x0506, 0x0304, 0x0102]),
            (BADC, [0x0201, 0x0403, 0x0605, 0x0807]),
            (DCBA, [0x0807, 0x0605, 0x0403, 0x0201]),
        ];
        for (order, regs) in cases {
            assert_eq!(
                dec(U64, order).decode_regs(&regs),
                Some(TagValue::UInt(0x0102_0304_0506_0708)),
                "{order:?}"
            );
            assert_eq!(
                dec(I64, order).decode_regs(&regs),
                Some(TagValue::Int(0x0102_0304_0506_0708)),
                "{order:?}"
            );
        }
        for order in ORDERS {
            let regs = encode_be_bytes(&(-2i64).to_be_bytes(), order);
            assert_eq!(dec(I64, order).decode_regs(&regs), Some(TagValue::Int(-2)));
            let regs = encode_be_bytes(&u64::MAX.to_be_bytes(), order);
            assert_eq!(
                dec(U64, order).decode_regs(&regs),
                Some(TagValue::UInt(u64::MAX))
            );
            let regs = encode_be_bytes(&(-1234.5678f64).to_be_bytes(), order);
            assert_eq!(
                dec(F64, order).decode_regs(&regs),
                Some(TagValue::Float(-1234.5678))
            );
        }
        // 1.0f64 = 0x3FF0000000000000.
        assert_eq!(
            dec(F64, CDAB).decode_regs(&[0, 0, 0, 0x3FF0]),
            Some(TagValue::Float(1.0))
        );
        assert_eq!(
            dec(F64, DCBA).decode_regs(&[0, 0, 0, 0xF03F]),
            Some(TagValue::Float(1.0))
        );
    }

    #[test]
    fn sixteen_bit_types() {
        for order in [ABCD, CDAB] {
            assert_eq!(
                dec(U16, order).decode_regs(&[0xFFFE]),
                Some(TagValue::UInt(0xFFFE))
            );
            assert_eq!(
                dec(I16, order).decode_regs(&[0xFFFE]),
                Some(TagValue::Int(-2))
            );
        }
        for order in [BADC, DCBA] {
            assert_eq!(
                dec(I16, order).decode_regs(&[0xFEFF]),
                Some(TagValue::Int(-2))
            );
            assert_eq!(
                dec(U16, order).decode_regs(&[0x3412]),
                Some(TagValue::UInt(0x1234))
            );
        }
        assert_eq!(
            dec(Bool, ABCD).decode_regs(&[0]),
            Some(TagValue::Bool(false))
        );
        assert_eq!(
            dec(Bool, ABCD).decode_regs(&[7]),
            Some(TagValue::Bool(true))
        );
        assert_eq!(dec(Bool, ABCD).decode_bit(true), TagValue::Bool(true));
    }

    #[test]
    fn strings_trim_and_swap() {
        let d = Decoder {
            length: 4,
            ..dec(String, ABCD)
        };
        // "AB12" then "3" and padding.
        let regs = [0x4142, 0x3132, 0x3320, 0x0000];
        assert_eq!(d.decode_regs(&regs), Some(TagValue::Text("AB123".into())));
        let swapped = Decoder { order: BADC, ..d };
        let regs = [0x4241, 0x3231, 0x2033, 0x2020];
        assert_eq!(
            swapped.decode_regs(&regs),
            Some(TagValue::Text("AB123".into()))
        );
        // Too few registers → None, no panic.
        assert_eq!(d.decode_regs(&[0x4142]), None);
        // Non-ASCII garbage is shown, not refused.
        let garbage = Decoder { length: 1, ..d };
        assert!(matches!(
            garbage.decode_regs(&[0xFF41]),
            Some(TagValue::Text(_))
        ));
    }

    #[test]
    fn scale_and_offset_make_floats_and_keep_integers_otherwise() {
        let d = Decoder {
            scale: 0.1,
            offset: -40.0,
            ..dec(U16, ABCD)
        };
        match d.decode_regs(&[650]) {
            Some(TagValue::Float(f)) => assert!((f - 25.0).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        let d = Decoder {
            scale: 2.0,
            ..dec(I32, CDAB)
        };
        assert_eq!(
            d.decode_regs(&[0xFFFE, 0xFFFF]),
            Some(TagValue::Float(-4.0))
        );
        assert_eq!(dec(I32, ABCD).decode_regs(&[0, 5]), Some(TagValue::Int(5)));
        assert_eq!(
            dec(U64, ABCD).decode_regs(&[0, 0, 0, 1]),
            Some(TagValue::UInt(1))
        );
    }

    #[test]
    fn short_input_is_none_not_panic() {
        for ty in [U16, I16, U32, I32, F32, U64, I64, F64] {
            for order in ORDERS {
                let regs = vec![0u16; usize::from(width(ty, None)) - 1];
                assert_eq!(dec(ty, order).decode_regs(&regs), None);
            }
        }
    }

    #[test]
    fn every_type_round_trips_through_encode_in_every_order() {
        for order in ORDERS {
            let r = encode_be_bytes(&0xBEEFu16.to_be_bytes(), order);
            assert_eq!(
                dec(U16, order).decode_regs(&r),
                Some(TagValue::UInt(0xBEEF))
            );
            let r = encode_be_bytes(&(-300i16).to_be_bytes(), order);
            assert_eq!(dec(I16, order).decode_regs(&r), Some(TagValue::Int(-300)));
            let r = encode_be_bytes(&4_000_000_000u32.to_be_bytes(), order);
            assert_eq!(
                dec(U32, order).decode_regs(&r),
                Some(TagValue::UInt(4_000_000_000))
            );
            let r = encode_be_bytes(&(-70_000i32).to_be_bytes(), order);
            assert_eq!(
                dec(I32, order).decode_regs(&r),
                Some(TagValue::Int(-70_000))
            );
            let r = encode_be_bytes(&(-0.5f32).to_be_bytes(), order);
            assert_eq!(dec(F32, order).decode_regs(&r), Some(TagValue::Float(-0.5)));
        }
    }
}
