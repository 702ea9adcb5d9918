//! EPC binary encodings on RFID tags (GS1 EPC Tag Data Standard), as readers print them: 24 hex
//! digits for a 96-bit EPC (upper or lower case, spaces tolerated).
//!
//! Layouts (most significant bit first):
//! - SGTIN-96: header `0x30` (8) | filter (3) | partition (3) | company prefix + item reference
//!   (44, split per the partition table) | serial (38);
//! - SSCC-96: header `0x31` (8) | filter (3) | partition (3) | company prefix + serial reference
//!   (58, split per the partition table) | unallocated (24, zero).
//!
//! The item reference's first digit is the GTIN's indicator digit, the serial reference's first
//! digit the SSCC's extension digit; the check digit is not encoded and is computed on decode.

use thiserror::Error;

use super::gs1::{Gs1Error, gtin_check_digit, validate_gtin, validate_sscc};

const SGTIN96_HEADER: u8 = 0x30;
const SSCC96_HEADER: u8 = 0x31;

/// Why an EPC could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EpcError {
    #[error("EPC must be 24 hex digits (96 bits), got {got} digits")]
    Length { got: usize },
    #[error("EPC contains {ch:?}, which is not a hex digit")]
    NotHex { ch: char },
    #[error("unsupported EPC header 0x{header:02X} (supported: 0x30 SGTIN-96, 0x31 SSCC-96)")]
    UnknownHeader { header: u8 },
    #[error("{scheme}: invalid partition value {partition} (valid: 0-6)")]
    BadPartition { scheme: &'static str, partition: u8 },
    #[error("{scheme}: {field} {value} does not fit in {digits} decimal digits")]
    FieldOverflow {
        scheme: &'static str,
        field: &'static str,
        value: u64,
        digits: usize,
    },
    #[error("filter value {0} is not 0-7")]
    BadFilter(u8),
    #[error("company prefix length {0} is not 6-12 digits")]
    BadCompanyPrefixLength(usize),
    #[error("SGTIN-96 serial {0} does not fit in 38 bits (max 274877906943)")]
    SerialTooLarge(u64),
    #[error("bad EPC URI {uri:?}: {reason}")]
    BadUri { uri: String, reason: String },
    #[error(transparent)]
    Gs1(#[from] Gs1Error),
}

/// One partition table row: (company prefix bits, company prefix digits, other bits, other digits).
type PartitionRow = (u32, usize, u32, usize);

/// Partition tables, indexed by the partition value (TDS tables 14-2 and 14-5).
const SGTIN_PARTITIONS: [PartitionRow; 7] = [
    (40, 12, 4, 1),
    (37, 11, 7, 2),
    (34, 10, 10, 3),
    (30, 9, 14, 4),
    (27, 8, 17, 5),
    (24, 7, 20, 6),
    (20, 6, 24, 7),
];
const SSCC_PARTITIONS: [PartitionRow; 7] = [
    (40, 12, 18, 5),
    (37, 11, 21, 6),
    (34, 10, 24, 7),
    (30, 9, 28, 8),
    (27, 8, 31, 9),
    (24, 7, 34, 10),
    (20, 6, 38, 11),
];

const SGTIN_SERIAL_MAX: u64 = (1 << 38) - 1;

/// An SGTIN: a GTIN plus a serial number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sgtin {
    /// 0-7; 1 = point-of-sale item, 2 = full case, … (TDS table 10-3).
    pub filter: u8,
    /// 6-12 digits, as assigned by GS1.
    pub company_prefix: String,
    /// Indicator digit followed by the item reference; 13 minus the prefix's digits.
    pub item_reference: String,
    pub serial: u64,
}

impl Sgtin {
    /// From a GTIN (8/12/13/14 digits, check digit verified) and the length of its company
    /// prefix — which the GTIN itself does not tell, so the caller must know it.
    pub fn from_gtin(
        gtin: &str,
        company_prefix_digits: usize,
        serial: u64,
        filter: u8,
    ) -> Result<Sgtin, EpcError> {
        validate_gtin(gtin)?;
        if !(6..=12).contains(&company_prefix_digits) {
            return Err(EpcError::BadCompanyPrefixLength(company_prefix_digits));
        }
        let g = format!("{gtin:0>14}");
        let cp_end = 1 + company_prefix_digits;
        Ok(Sgtin {
            filter,
            company_prefix: g[1..cp_end].to_owned(),
            item_reference: format!("{}{}", &g[..1], &g[cp_end..13]),
            serial,
        })
    }

    /// The GTIN-14, with its check digit.
    pub fn gtin(&self) -> String {
        let (indicator, rest) = self
            .item_reference
            .split_at(self.item_reference.len().min(1));
        let body = format!("{indicator}{}{rest}", self.company_prefix);
        let check = gtin_check_digit(&body).map_or(String::new(), |d| d.to_string());
        format!("{body}{check}")
    }

    /// `urn:epc:id:sgtin:0614141.812345.6789`
    pub fn pure_identity_uri(&self) -> String {
        format!(
            "urn:epc:id:sgtin:{}.{}.{}",
            self.company_prefix, self.item_reference, self.serial
        )
    }

    /// `urn:epc:tag:sgtin-96:3.0614141.812345.6789`
    pub fn tag_uri(&self) -> String {
        format!(
            "urn:epc:tag:sgtin-96:{}.{}.{}.{}",
            self.filter, self.company_prefix, self.item_reference, self.serial
        )
    }

    /// The SGTIN-96 as 24 upper-case hex digits.
    pub fn encode_hex(&self) -> Result<String, EpcError> {
        const SCHEME: &str = "SGTIN-96";
        check_filter(self.filter)?;
        if self.serial > SGTIN_SERIAL_MAX {
            return Err(EpcError::SerialTooLarge(self.serial));
        }
        let (partition, (cp_bits, _, ir_bits, _)) = partition_for(
            SCHEME,
            &SGTIN_PARTITIONS,
            &self.company_prefix,
            &self.item_reference,
        )?;
        let cp = digits_value(SCHEME, "company prefix", &self.company_prefix)?;
        let ir = digits_value(SCHEME, "item reference", &self.item_reference)?;
        let mut w = BitWriter::default();
        w.put(u64::from(SGTIN96_HEADER), 8);
        w.put(u64::from(self.filter), 3);
        w.put(partition, 3);
        w.put(cp, cp_bits);
        w.put(ir, ir_bits);
        w.put(self.serial, 38);
        Ok(w.hex())
    }
}

/// An SSCC as encoded on a tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sscc {
    /// 0-7; 2 = full case, 7 = unit load (TDS table 10-5).
    pub filter: u8,
    /// 6-12 digits, as assigned by GS1.
    pub company_prefix: String,
    /// Extension digit followed by the serial reference; 17 minus the prefix's digits.
    pub serial_reference: String,
}

impl Sscc {
    /// From an SSCC-18 (check digit verified) and the length of its company prefix.
    pub fn from_sscc(
        sscc: &str,
        company_prefix_digits: usize,
        filter: u8,
    ) -> Result<Sscc, EpcError> {
        validate_sscc(sscc)?;
        if !(6..=12).contains(&company_prefix_digits) {
            return Err(EpcError::BadCompanyPrefixLength(company_prefix_digits));
        }
        let cp_end = 1 + company_prefix_digits;
        Ok(Sscc {
            filter,
            company_prefix: sscc[1..cp_end].to_owned(),
            serial_reference: format!("{}{}", &sscc[..1], &sscc[cp_end..17]),
        })
    }

    /// The SSCC-18, with its check digit.
    pub fn sscc(&self) -> String {
        let (ext, rest) = self
            .serial_reference
            .split_at(self.serial_reference.len().min(1));
        let body = format!("{ext}{}{rest}", self.company_prefix);
        let check = gtin_check_digit(&body).map_or(String::new(), |d| d.to_string());
        format!("{body}{check}")
    }

    /// `urn:epc:id:sscc:0614141.1234567890`
    pub fn pure_identity_uri(&self) -> String {
        format!(
            "urn:epc:id:sscc:{}.{}",
            self.company_prefix, self.serial_reference
        )
    }

    /// `urn:epc:tag:sscc-96:3.0614141.1234567890`
    pub fn tag_uri(&self) -> String {
        format!(
            "urn:epc:tag:sscc-96:{}.{}.{}",
            self.filter, self.company_prefix, self.serial_reference
        )
    }

    /// The SSCC-96 as 24 upper-case hex digits.
    pub fn encode_hex(&self) -> Result<String, EpcError> {
        const SCHEME: &str = "SSCC-96";
        check_filter(self.filter)?;
        let (partition, (cp_bits, _, sr_bits, _)) = partition_for(
            SCHEME,
            &SSCC_PARTITIONS,
            &self.company_prefix,
            &self.serial_reference,
        )?;
        let cp = digits_value(SCHEME, "company prefix", &self.company_prefix)?;
        let sr = digits_value(SCHEME, "serial reference", &self.serial_reference)?;
        let mut w = BitWriter::default();
        w.put(u64::from(SSCC96_HEADER), 8);
        w.put(u64::from(self.filter), 3);
        w.put(partition, 3);
        w.put(cp, cp_bits);
        w.put(sr, sr_bits);
        w.put(0, 24);
        Ok(w.hex())
    }
}

/// A decoded EPC.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Epc {
    Sgtin96(Sgtin),
    Sscc96(Sscc),
}

impl Epc {
    /// The pure identity URI (`urn:epc:id:…`), the form EPCIS uses.
    pub fn pure_identity_uri(&self) -> String {
        match self {
            Epc::Sgtin96(s) => s.pure_identity_uri(),
            Epc::Sscc96(s) => s.pure_identity_uri(),
        }
    }

    /// The tag URI (`urn:epc:tag:…-96:filter.…`).
    pub fn tag_uri(&self) -> String {
        match self {
            Epc::Sgtin96(s) => s.tag_uri(),
            Epc::Sscc96(s) => s.tag_uri(),
        }
    }

    pub fn filter(&self) -> u8 {
        match self {
            Epc::Sgtin96(s) => s.filter,
            Epc::Sscc96(s) => s.filter,
        }
    }

    /// The 96-bit encoding as 24 upper-case hex digits.
    pub fn encode_hex(&self) -> Result<String, EpcError> {
        match self {
            Epc::Sgtin96(s) => s.encode_hex(),
            Epc::Sscc96(s) => s.encode_hex(),
        }
    }
}

/// Decodes a 96-bit EPC from hex as an RFID reader prints it (case and whitespace ignored).
pub fn decode_epc_hex(hex: &str) -> Result<Epc, EpcError> {
    let mut digits = Vec::with_capacity(24);
    for ch in hex.chars().filter(|c| !c.is_whitespace()) {
        let Some(d) = ch.to_digit(16) else {
            return Err(EpcError::NotHex { ch });
        };
        digits.push(d);
    }
    if digits.len() != 24 {
        return Err(EpcError::Length { got: digits.len() });
    }
    let bits = digits
        .iter()
        .fold(0u128, |acc, d| (acc << 4) | u128::from(*d));
    let mut r = BitReader { bits, left: 96 };
    // `take(n)` for n ≤ 8 fits in u8.
    let header = r.take(8) as u8;
    let filter = r.take(3) as u8;
    let partition = r.take(3) as u8;
    match header {
        SGTIN96_HEADER => {
            const SCHEME: &str = "SGTIN-96";
            let (cp_bits, cp_digits, ir_bits, ir_digits) = *SGTIN_PARTITIONS
                .get(usize::from(partition))
                .ok_or(EpcError::BadPartition {
                    scheme: SCHEME,
                    partition,
                })?;
            let company_prefix = padded(SCHEME, "company prefix", r.take(cp_bits), cp_digits)?;
            let item_reference = padded(SCHEME, "item reference", r.take(ir_bits), ir_digits)?;
            let serial = r.take(38);
            Ok(Epc::Sgtin96(Sgtin {
                filter,
                company_prefix,
                item_reference,
                serial,
            }))
        }
        SSCC96_HEADER => {
            const SCHEME: &str = "SSCC-96";
            let (cp_bits, cp_digits, sr_bits, sr_digits) = *SSCC_PARTITIONS
                .get(usize::from(partition))
                .ok_or(EpcError::BadPartition {
                    scheme: SCHEME,
                    partition,
                })?;
            let company_prefix = padded(SCHEME, "company prefix", r.take(cp_bits), cp_digits)?;
            let serial_reference = padded(SCHEME, "serial reference", r.take(sr_bits), sr_digits)?;
            // The remaining 24 bits are unallocated; readers in the field sometimes carry
            // junk there, and it does not change the identity, so it is ignored.
            Ok(Epc::Sscc96(Sscc {
                filter,
                company_prefix,
                serial_reference,
            }))
        }
        header => Err(EpcError::UnknownHeader { header }),
    }
}

/// Encodes a GTIN + serial as SGTIN-96 hex (the company prefix length must be known).
pub fn encode_sgtin96(
    gtin: &str,
    company_prefix_digits: usize,
    serial: u64,
    filter: u8,
) -> Result<String, EpcError> {
    Sgtin::from_gtin(gtin, company_prefix_digits, serial, filter)?.encode_hex()
}

/// Encodes an SSCC-18 as SSCC-96 hex (the company prefix length must be known).
pub fn encode_sscc96(
    sscc: &str,
    company_prefix_digits: usize,
    filter: u8,
) -> Result<String, EpcError> {
    Sscc::from_sscc(sscc, company_prefix_digits, filter)?.encode_hex()
}

/// Parses `urn:epc:id:sgtin:CP.IR.SERIAL`, `urn:epc:id:sscc:CP.SR` or the tag URIs
/// `urn:epc:tag:sgtin-96:F.CP.IR.SERIAL` / `urn:epc:tag:sscc-96:F.CP.SR`. A pure identity URI
/// carries no filter; it is returned as 0 ("all others").
pub fn parse_epc_uri(uri: &str) -> Result<Epc, EpcError> {
    let bad = |reason: &str| EpcError::BadUri {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest, tagged) = if let Some(r) = uri.strip_prefix("urn:epc:id:sgtin:") {
        ("sgtin", r, false)
    } else if let Some(r) = uri.strip_prefix("urn:epc:id:sscc:") {
        ("sscc", r, false)
    } else if let Some(r) = uri.strip_prefix("urn:epc:tag:sgtin-96:") {
        ("sgtin", r, true)
    } else if let Some(r) = uri.strip_prefix("urn:epc:tag:sscc-96:") {
        ("sscc", r, true)
    } else {
        return Err(bad(
            "expected urn:epc:id:sgtin:, urn:epc:id:sscc:, urn:epc:tag:sgtin-96: or urn:epc:tag:sscc-96:",
        ));
    };
    let mut parts: Vec<&str> = rest.split('.').collect();
    let filter = if tagged {
        let f = parts.remove(0);
        f.parse::<u8>()
            .ok()
            .filter(|f| *f <= 7)
            .ok_or_else(|| bad("filter must be 0-7"))?
    } else {
        0
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (scheme, parts.as_slice()) {
        ("sgtin", [cp, ir, serial]) => {
            if !digits(cp) || !digits(ir) || cp.len() + ir.len() != 13 {
                return Err(bad(
                    "company prefix and item reference must be 13 digits together",
                ));
            }
            // SGTIN-96 can only carry a serial that is a number without leading zeros.
            if !digits(serial) || (serial.len() > 1 && serial.starts_with('0')) {
                return Err(bad(
                    "SGTIN-96 serial must be a decimal number without leading zeros",
                ));
            }
            let serial = serial
                .parse::<u64>()
                .map_err(|_| bad("serial out of range"))?;
            Ok(Epc::Sgtin96(Sgtin {
                filter,
                company_prefix: (*cp).to_owned(),
                item_reference: (*ir).to_owned(),
                serial,
            }))
        }
        ("sscc", [cp, sr]) => {
            if !digits(cp) || !digits(sr) || cp.len() + sr.len() != 17 {
                return Err(bad(
                    "company prefix and serial reference must be 17 digits together",
                ));
            }
            Ok(Epc::Sscc96(Sscc {
                filter,
                company_prefix: (*cp).to_owned(),
                serial_reference: (*sr).to_owned(),
            }))
        }
        _ => Err(bad("wrong number of fields")),
    }
}

fn check_filter(filter: u8) -> Result<(), EpcError> {
    if filter > 7 {
        return Err(EpcError::BadFilter(filter));
    }
    Ok(())
}

/// The partition whose company prefix has as many digits as `cp`, and whose other field has as
/// many digits as `other`.
fn partition_for(
    scheme: &'static str,
    table: &[PartitionRow; 7],
    cp: &str,
    other: &str,
) -> Result<(u64, PartitionRow), EpcError> {
    let Some(p) = table.iter().position(|row| row.1 == cp.len()) else {
        return Err(EpcError::BadCompanyPrefixLength(cp.len()));
    };
    let row = table[p];
    if other.len() != row.3 {
        return Err(EpcError::BadUri {
            uri: format!("{cp}.{other}"),
            reason: format!(
                "{scheme} with a {}-digit company prefix needs a {}-digit second field",
                cp.len(),
                row.3
            ),
        });
    }
    Ok((p as u64, row))
}

fn digits_value(scheme: &'static str, field: &'static str, s: &str) -> Result<u64, EpcError> {
    s.parse::<u64>().map_err(|_| EpcError::BadUri {
        uri: s.to_owned(),
        reason: format!("{scheme} {field} must be digits"),
    })
}

/// `value` as exactly `digits` decimal digits, zero-padded; a larger value is an invalid tag.
fn padded(
    scheme: &'static str,
    field: &'static str,
    value: u64,
    digits: usize,
) -> Result<String, EpcError> {
    let s = format!("{value:0digits$}");
    if s.len() > digits {
        return Err(EpcError::FieldOverflow {
            scheme,
            field,
            value,
            digits,
        });
    }
    Ok(s)
}

struct BitReader {
    bits: u128,
    left: u32,
}

impl BitReader {
    /// The next `n` (≤ 64) bits, most significant first.
    fn take(&mut self, n: u32) -> u64 {
        self.left -= n;
        ((self.bits >> self.left) & ((1u128 << n) - 1)) as u64
    }
}

#[derive(Default)]
struct BitWriter {
    bits: u128,
    len: u32,
}

impl BitWriter {
    fn put(&mut self, value: u64, n: u32) {
        self.bits = (self.bits << n) | (u128::from(value) & ((1u128 << n) - 1));
        self.len += n;
    }

    fn hex(&self) -> String {
        debug_assert_eq!(self.len, 96);
        format!("{:024X}", self.bits)
    }
}
