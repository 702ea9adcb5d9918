//! Identifiers on labels and tags: GS1 element strings and Digital Link URIs, GTIN / SSCC check
//! digits, EPC SGTIN-96 / SSCC-96 binary encodings.
//!
//! - [`gs1`]: element strings (`]C1…`, `]d2…`, FNC1 as GS, `(01)…(10)…`), check digits;
//! - [`digital_link`]: `https://id.gs1.org/01/…/10/…?17=…` URIs;
//! - [`epc`]: 96-bit EPCs from RFID readers (hex) and back.
//!
//! [`parse_gs1`] takes whatever a barcode scanner delivers (element string or Digital Link).

pub mod digital_link;
pub mod epc;
pub mod gs1;

pub use digital_link::parse_digital_link;
pub use epc::{
    Epc, EpcError, Sgtin, Sscc, decode_epc_hex, encode_sgtin96, encode_sscc96, parse_epc_uri,
};
pub use gs1::{
    Gs1Element, Gs1Elements, Gs1Error, gtin_check_digit, gtin14, parse_element_string, parse_gs1,
    resolve_date, validate_gtin, validate_sscc,
};
