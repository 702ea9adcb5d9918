//! GS1 / EPC identifiers against the standards' own examples.

use threadline_shared::ids::{
    Epc, Gs1Element, Gs1Error, decode_epc_hex, encode_sgtin96, encode_sscc96, gtin_check_digit,
    parse_digital_link, parse_element_string, parse_epc_uri, parse_gs1, validate_gtin,
    validate_sscc,
};

fn pairs(input: &str) -> Vec<(String, String)> {
    parse_gs1(input)
        .unwrap_or_else(|e| panic!("{input:?}: {e}"))
        .elements
        .into_iter()
        .map(|Gs1Element { ai, value }| (ai, value))
        .collect()
}

fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn err(input: &str) -> Gs1Error {
    match parse_gs1(input) {
        Ok(els) => panic!("{input:?} parsed as {els} but should fail"),
        Err(e) => e,
    }
}

#[test]
fn general_specifications_hri_example() {
    let els = parse_element_string("(01)09506000134352(17)141120(10)AB-123").unwrap();
    assert_eq!(els.gtin(), Some("09506000134352"));
    assert_eq!(els.lot(), Some("AB-123"));
    assert_eq!(els.get("17"), Some("141120"));
    assert_eq!(
        els.expiry().map(|d| d.to_string()).as_deref(),
        Some("2014-11-20")
    );
    assert_eq!(els.to_hri(), "(01)09506000134352(17)141120(10)AB-123");
}

#[test]
fn scanner_forms_give_the_same_elements() {
    let want = owned(&[
        ("01", "09506000134352"),
        ("10", "ABC"),
        ("21", "12345"),
        ("17", "261231"),
    ]);
    // GS1-128 with symbology identifier, DataMatrix with leading FNC1, QR, bare data, and the
    // redundant GS some encoders put after a fixed-length field.
    for input in [
        "]C10109506000134352", /* no GS after fixed */
        "]d2\u{1d}0109506000134352",
        "]Q30109506000134352",
        "0109506000134352\u{1d}",
    ] {
        let mut s = input.to_owned();
        s.push_str("10ABC\u{1d}2112345\u{1d}17261231");
        assert_eq!(pairs(&s), want, "{s:?}");
    }
    assert_eq!(pairs("(01)09506000134352(10)ABC(21)12345(17)261231"), want);
    // Round trip through the scanner form.
    let els = parse_gs1("(01)09506000134352(10)ABC(21)12345(17)261231").unwrap();
    assert_eq!(
        els.to_element_string(),
        "0109506000134352".to_owned() + "10ABC\u{1d}2112345\u{1d}17261231"
    );
    assert_eq!(parse_gs1(&els.to_element_string()).unwrap(), els);
}

#[test]
fn sscc_count_and_logistics() {
    let els =
        parse_gs1("]C100106141411234567897\u{1d}0209506000134352378\u{1d}400PO-4711").unwrap();
    assert_eq!(els.sscc(), Some("106141411234567897"));
    assert_eq!(els.get("02"), Some("09506000134352"));
    assert_eq!(els.count(), Some(8));
    assert_eq!(els.get("400"), Some("PO-4711"));
    let els = parse_gs1("(00)106141411234567897").unwrap();
    assert_eq!(els.sscc(), Some("106141411234567897"));
}

#[test]
fn other_supported_ais() {
    let els = parse_gs1(
        "(01)09506000134352(11)260101(13)260200(15)261231(21)SN-1(240)P-6202(250)S2(251)SRC-9(3103)001250(3202)000350",
    )
    .unwrap();
    assert_eq!(els.serial(), Some("SN-1"));
    assert_eq!(els.get("240"), Some("P-6202"));
    assert_eq!(els.get("250"), Some("S2"));
    assert_eq!(els.get("251"), Some("SRC-9"));
    let m = |ai: &str| {
        els.iter()
            .find(|e| e.ai == ai)
            .and_then(Gs1Element::measure)
    };
    assert_eq!(m("3103"), Some(1.25));
    assert_eq!(m("3202"), Some(3.5));
    // Fixed-length measures need no GS in scanner data.
    let els = parse_gs1("]C13103001250\u{1d}10LOT1").unwrap();
    assert_eq!(els.get("3103"), Some("001250"));
    assert_eq!(els.lot(), Some("LOT1"));
}

#[test]
fn bad_gtin_check_digit_says_expected_and_got() {
    let e = err("(01)09506000134353(10)X");
    assert!(
        matches!(
            e,
            Gs1Error::BadCheckDigit {
                expected: 2,
                got: 3,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("bad check digit: expected 2, got 3"), "{msg}");
    assert!(msg.contains("09506000134353"), "{msg}");
    let e = err("]C100106141411234567890");
    assert!(
        e.to_string().contains("bad check digit: expected 7, got 0"),
        "{e}"
    );
}

#[test]
fn unknown_ai_is_named_with_its_position() {
    let e = err("]C10109506000134352\u{1d}8888X");
    assert_eq!(
        e,
        Gs1Error::UnknownAi {
            ai: "8888".into(),
            position: 20
        }
    );
    assert_eq!(
        e.to_string(),
        "unknown or unsupported AI (8888) at position 20"
    );
    let e = err("(01)09506000134352(99)A(7003)2601011200");
    assert!(
        matches!(&e, Gs1Error::UnknownAi { ai, position: 24 } if ai == "7003"),
        "{e:?}"
    );
    assert!(
        matches!(err("0409506000134352"), Gs1Error::UnknownAi { ai, position: 0 } if ai == "04")
    );
}

#[test]
fn truncated_and_malformed_values() {
    let e = err("]C10109506000");
    assert_eq!(
        e,
        Gs1Error::Truncated {
            ai: "01".into(),
            expected: 14,
            got: 8,
            position: 5
        }
    );
    assert!(e.to_string().contains("needs 14 characters, got 8"), "{e}");
    // A GS inside a fixed-length field truncates it.
    assert!(matches!(
        err("01095060001\u{1d}10ABC"),
        Gs1Error::Truncated { got: 9, .. }
    ));
    assert!(matches!(
        err("(01)0950600013435"),
        Gs1Error::Truncated { .. }
    ));
    assert!(matches!(
        err("(01)095060001343520"),
        Gs1Error::TooLong {
            max: 14,
            got: 15,
            ..
        }
    ));
    assert!(matches!(
        err("10ABCDEFGHIJKLMNOPQRSTU"),
        Gs1Error::TooLong {
            max: 20,
            got: 21,
            ..
        }
    ));
    assert!(matches!(
        err("(01)0950600013435X"),
        Gs1Error::NotNumeric {
            ch: 'X',
            position: 17,
            ..
        }
    ));
    assert!(matches!(
        err("(10)AB#1"),
        Gs1Error::InvalidCharacter {
            ch: '#',
            position: 6,
            ..
        }
    ));
    assert!(matches!(
        err("(10)ABé"),
        Gs1Error::InvalidCharacter { ch: 'é', .. }
    ));
    assert!(matches!(err("10\u{1d}21X"), Gs1Error::EmptyValue { .. }));
    assert!(matches!(
        err("(37)123456789"),
        Gs1Error::TooLong { max: 8, .. }
    ));
    assert!(matches!(err("(10)A(10)B"), Gs1Error::Conflicting { .. }));
    assert!(matches!(err("(01"), Gs1Error::BadParentheses { .. }));
    assert!(matches!(err("]d1ABC"), Gs1Error::NotGs1Symbology { .. }));
    assert!(matches!(err("]C1"), Gs1Error::Empty));
    assert!(matches!(err(""), Gs1Error::Empty));
    assert!(matches!(
        err("SN0000000042"),
        Gs1Error::ExpectedAi { position: 0, .. }
    ));
}

#[test]
fn dates_are_validated() {
    assert!(parse_gs1("(17)261231").is_ok());
    assert!(parse_gs1("(17)260200").is_ok(), "day 00 = end of month");
    assert!(parse_gs1("(17)280229").is_ok(), "leap year");
    for bad in [
        "(17)261301",
        "(17)260001",
        "(17)260132",
        "(17)270229",
        "(11)260431",
    ] {
        let e = err(bad);
        assert!(matches!(e, Gs1Error::BadDate { .. }), "{bad}: {e:?}");
    }
    assert!(err("(17)261301").to_string().contains("month 13"));
}

#[test]
fn digital_link_examples() {
    let want = owned(&[("01", "09506000134352"), ("10", "AB-123"), ("17", "141120")]);
    assert_eq!(
        pairs("https://id.gs1.org/01/09506000134352/10/AB-123?17=141120"),
        want
    );
    let els = parse_digital_link(
        "https://example.com/products/01/09506000134352/10/ABC/21/12345?17=261231&linkType=gs1:pip",
    )
    .unwrap();
    assert_eq!(els.gtin(), Some("09506000134352"));
    assert_eq!(els.serial(), Some("12345"));
    assert_eq!(els.lot(), Some("ABC"));
    assert_eq!(els.get("17"), Some("261231"));
    // GTIN-13 padded, percent-decoding, '+' kept, legacy aliases, trailing slash.
    let els = parse_gs1("HTTPS://brand.example/gtin/9506000134352/lot/A%2FB+1/").unwrap();
    assert_eq!(els.gtin(), Some("09506000134352"));
    assert_eq!(els.lot(), Some("A/B+1"));
    let els = parse_gs1("https://id.gs1.org/00/106141411234567897").unwrap();
    assert_eq!(els.sscc(), Some("106141411234567897"));
}

#[test]
fn digital_link_errors() {
    let e = err("https://id.gs1.org/01/09506000134353/10/AB-123");
    assert!(
        e.to_string().contains("bad check digit: expected 2, got 3"),
        "{e}"
    );
    let e = err("https://id.gs1.org/01/09506000134352/10/AB?7777=1");
    assert!(
        matches!(&e, Gs1Error::UnknownAi { ai, position: 43 } if ai == "7777"),
        "{e:?}"
    );
    let e = err("https://id.gs1.org/01/09506000134352/99x/1");
    assert!(matches!(e, Gs1Error::ExpectedAi { .. }), "{e:?}");
    let e = err("https://id.gs1.org/01/09506000134352/10");
    assert!(matches!(e, Gs1Error::EmptyValue { .. }), "{e:?}");
    assert!(matches!(
        err("https://id.gs1.org/foo/bar"),
        Gs1Error::BadDigitalLink { .. }
    ));
    assert!(matches!(
        err("https://id.gs1.org/01/09506000134352?17=261301"),
        Gs1Error::BadDate { .. }
    ));
    assert!(matches!(
        parse_digital_link("ftp://id.gs1.org/01/09506000134352"),
        Err(Gs1Error::BadDigitalLink { .. })
    ));
}

#[test]
fn key_validation() {
    assert_eq!(gtin_check_digit("0950600013435"), Ok(2));
    for ok in [
        "09506000134352",
        "9506000134352",
        "614141000036",
        "96385074",
    ] {
        validate_gtin(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let e = validate_gtin("09506000134353").unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad check digit: expected 2, got 3 in GTIN 09506000134353"
    );
    assert!(matches!(validate_gtin("123"), Err(Gs1Error::BadKey { .. })));
    assert!(matches!(
        validate_gtin("0950600013435X"),
        Err(Gs1Error::BadKey { .. })
    ));
    validate_sscc("106141411234567897").unwrap();
    assert!(validate_sscc("106141411234567898").is_err());
    assert!(validate_sscc("10614141123456789").is_err());
}

#[test]
fn tds_sgtin96_example() {
    for hex in [
        "3074257BF7194E4000001A85",
        "3074257bf7194e4000001a85",
        "30 74 25 7B F7 19 4E 40 00 00 1A 85",
    ] {
        let Epc::Sgtin96(s) = decode_epc_hex(hex).unwrap() else {
            panic!("not an SGTIN")
        };
        assert_eq!(s.filter, 3);
        assert_eq!(s.gtin(), "80614141123458");
        assert_eq!(s.serial, 6789);
        assert_eq!(
            s.pure_identity_uri(),
            "urn:epc:id:sgtin:0614141.812345.6789"
        );
        assert_eq!(s.tag_uri(), "urn:epc:tag:sgtin-96:3.0614141.812345.6789");
    }
    assert_eq!(
        encode_sgtin96("80614141123458", 7, 6789, 3).unwrap(),
        "3074257BF7194E4000001A85"
    );
    let uri = parse_epc_uri("urn:epc:tag:sgtin-96:3.0614141.812345.6789").unwrap();
    assert_eq!(uri.encode_hex().unwrap(), "3074257BF7194E4000001A85");
}

#[test]
fn sscc96_round_trip() {
    // urn:epc:id:sscc:0614141.1234567890 laid out per TDS §14.5.2: header 0x31, filter 3,
    // partition 5 (24-bit company prefix, 34-bit serial reference), 24 zero bits.
    let expected_hex = {
        let bits: u128 = (0x31u128 << 88)
            | (3u128 << 85)
            | (5u128 << 82)
            | (614141u128 << 58)
            | (1234567890u128 << 24);
        format!("{bits:024X}")
    };
    let epc = parse_epc_uri("urn:epc:tag:sscc-96:3.0614141.1234567890").unwrap();
    let hex = epc.encode_hex().unwrap();
    assert_eq!(hex, expected_hex);
    assert_eq!(hex, "3174257BF4499602D2000000");
    let Epc::Sscc96(s) = decode_epc_hex(&hex).unwrap() else {
        panic!("not an SSCC")
    };
    assert_eq!(s.pure_identity_uri(), "urn:epc:id:sscc:0614141.1234567890");
    assert_eq!(s.filter, 3);
    // Extension digit 1 + company prefix 0614141 + 234567890 + check digit.
    let sscc = s.sscc();
    assert_eq!(&sscc[..17], "10614141234567890");
    validate_sscc(&sscc).unwrap();
    assert_eq!(encode_sscc96(&sscc, 7, 3).unwrap(), hex);
    // The General Specifications' SSCC through the encoder and back.
    let hex = encode_sscc96("106141411234567897", 7, 2).unwrap();
    let Epc::Sscc96(s) = decode_epc_hex(&hex).unwrap() else {
        panic!("not an SSCC")
    };
    assert_eq!(s.sscc(), "106141411234567897");
}

#[test]
fn epc_errors() {
    use threadline_shared::ids::EpcError;
    assert_eq!(
        decode_epc_hex("3074257BF7194E4000001A").unwrap_err(),
        EpcError::Length { got: 22 }
    );
    assert!(matches!(
        decode_epc_hex("3074257BF7194E4000001AXY"),
        Err(EpcError::NotHex { ch: 'X' })
    ));
    let e = decode_epc_hex("E2801160600002054CC2093F").unwrap_err();
    assert_eq!(e, EpcError::UnknownHeader { header: 0xE2 });
    assert!(e.to_string().contains("0xE2"), "{e}");
    // Partition 7 does not exist.
    assert!(matches!(
        decode_epc_hex("307C257BF7194E4000001A85"),
        Err(EpcError::BadPartition { partition: 7, .. })
    ));
    // Partition 0: 12-digit company prefix in 40 bits; all ones overflow 12 digits.
    assert!(matches!(
        decode_epc_hex("3063FFFFFFFFFC0000000000"),
        Err(EpcError::FieldOverflow { .. })
    ));
    assert!(matches!(
        encode_sgtin96("80614141123458", 7, 1 << 38, 3),
        Err(EpcError::SerialTooLarge(_))
    ));
    assert!(matches!(
        encode_sgtin96("80614141123459", 7, 1, 3),
        Err(EpcError::Gs1(Gs1Error::BadCheckDigit { .. }))
    ));
    assert!(parse_epc_uri("urn:epc:id:sgtin:0614141.812345.06789").is_err());
    assert!(parse_epc_uri("urn:epc:id:sgtin:0614141.81234.6789").is_err());
}

#[test]
fn garbage_never_panics() {
    // Deterministic pseudo-random inputs built from the characters that matter to the parsers:
    // digits, GS, parentheses, symbology prefixes, URI punctuation, multi-byte characters.
    const PIECES: [&str; 24] = [
        "0",
        "1",
        "7",
        "9",
        "01",
        "00",
        "10",
        "17",
        "310",
        "\u{1d}",
        "(",
        ")",
        "]C1",
        "]d2",
        "é",
        "€",
        "%",
        "%2",
        "/",
        "?",
        "=",
        "&",
        "https://x/",
        "A",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let n = (next() % 12) as usize;
        let s: String = (0..n)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect();
        let _ = parse_gs1(&s);
        let _ = parse_element_string(&s);
        let _ = parse_digital_link(&s);
        let _ = decode_epc_hex(&s);
        let _ = parse_epc_uri(&s);
        let _ = Gs1Element::new(s.clone(), "123456").measure();
    }
    for ai in ["12é", "é12", "31é"] {
        assert_eq!(Gs1Element::new(ai, "000100").measure(), None);
    }
}

#[test]
fn every_decodable_epc_encodes_back_to_itself() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut decoded = 0;
    for i in 0..50_000u32 {
        let header: u128 = if i % 2 == 0 { 0x30 } else { 0x31 };
        let mut bits = (header << 88) | ((u128::from(next()) << 24) & ((1u128 << 88) - 1));
        bits |= u128::from(next() & 0xFF_FFFF);
        if header == 0x31 {
            bits &= !0xFF_FFFF; // unallocated bits are ignored on decode, zero on encode
        }
        let hex = format!("{bits:024X}");
        if let Ok(epc) = decode_epc_hex(&hex) {
            decoded += 1;
            assert_eq!(epc.encode_hex().unwrap(), hex);
            assert_eq!(parse_epc_uri(&epc.tag_uri()).unwrap(), epc);
            if let Epc::Sgtin96(s) = &epc {
                validate_gtin(&s.gtin()).unwrap();
            }
            if let Epc::Sscc96(s) = &epc {
                validate_sscc(&s.sscc()).unwrap();
            }
        }
    }
    assert!(decoded > 10_000, "only {decoded} decodable");
}
