//! The barcodes the plant prints and scans: GS1 lot labels, SSCCs of cases and pallets, the
//! delivery note of a shipment.

/// ASCII 29, the GS1 group separator that ends a variable-length element.
pub const GS: char = '\u{1d}';

/// The delivery note barcode of a shipment: `SHP-000001/CUSTOMER`.
pub fn shipment_label(shipment: &str, customer: &str) -> String {
    format!("{shipment}/{customer}")
}

/// GS1 mod-10 check digit of the digits given (without the check digit).
pub fn gs1_check_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { d * 3 } else { d })
        .sum();
    (10 - sum % 10) % 10
}

/// The GS1 label of a received lot: `(01)GTIN(10)LOT<GS>(240)PART<GS>(37)QTY`.
pub fn lot_label(gtin: &str, lot: &str, part: &str, qty: u32) -> String {
    format!("01{gtin}10{lot}{GS}240{part}{GS}37{qty}")
}

/// An 18-digit SSCC (extension digit, company prefix 4012345, serial reference, check digit).
pub fn sscc(extension: u8, serial: u64) -> String {
    let body = format!("{extension}4012345{serial:09}");
    let check = gs1_check_digit(&body);
    format!("{body}{check}")
}

/// The scanned form of an SSCC: AI 00 element string.
pub fn sscc_label(sscc: &str) -> String {
    format!("00{sscc}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::plant::catalog::PART_BEARING;

    #[test]
    fn labels_are_valid_gs1() {
        assert_eq!(gs1_check_digit("629104150021"), 3);
        let s = sscc(0, 1);
        assert_eq!(s.len(), 18);
        assert_eq!(gs1_check_digit(&s[..17]), s[17..].parse::<u32>().unwrap());
        let l = lot_label("04012345000015", "LOT-BRG-000001", PART_BEARING, 500);
        assert_eq!(
            l,
            "0104012345000015".to_owned() + "10LOT-BRG-000001\u{1d}240P-6202\u{1d}37500"
        );
    }
}
