//! Signed envelopes and acks: HMAC-SHA256 with a per-gateway key (docs/security.md, "Signed
//! envelopes and acks", is the reference of the format).
//!
//! **Wire format.** MQTT 3.1.1 has no user properties, so the signature travels *after* the
//! JSON, as a fixed-size trailer of 80 bytes:
//!
//! ```text
//! <the JSON, exactly as sent>\ntl-hmac-sha256=<64 lowercase hex digits>
//! ```
//!
//! The receiver cuts the trailer off and verifies the MAC over the bytes before it; the JSON is
//! then parsed as if unsigned. Unsigned JSON never ends that way (a JSON document cannot
//! end in a bare word), so "signed or not" is unambiguous.
//!
//! **What is signed.** `HMAC-SHA256(key, DOMAIN || 0x00 || gateway_id || 0x00 || json)` with
//! `DOMAIN` = `threadline-envelope-v1` for a records envelope and `threadline-ack-v1` for an
//! ack. The gateway id is the one of the topic (the receiver knows it before parsing); the
//! domain keeps a signed ack from being passed off as an envelope and back. The epoch (and for
//! an ack, its ranges) are inside the signed JSON, and the receiver checks them after
//! verification: the aggregator refuses an envelope whose gateway differs from the topic's, the
//! gateway ignores an ack of another epoch. So a signed ack of one gateway cannot be replayed
//! to another (other id, other key), one of an old epoch changes nothing (other epoch), and one
//! of the current epoch only names records already deleted.
//!
//! **Keys.** A key file holds one or more keys, one per line: 64 hex digits (32 random bytes),
//! `#` comments and blank lines ignored. The first key signs; every key verifies — that is
//! how a key is rolled over without losing a message (docs/security.md, "Key rotation").
//! Verification hashes in place and compares the tags in constant time (every byte, no early
//! exit: `tags_equal`).
//!
//! **Why ring.** It is already in the build for rustls (MQTT and HTTP TLS), it has HMAC with a
//! constant-time verify and the system CSPRNG (`SystemRandom`) that `keygen` needs, so signing
//! adds no crate to the tree (the `hmac` + `sha2` + `rand` pair would add two).

use std::fmt;
use std::path::Path;

use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

/// Bytes of a key (the output size of SHA-256, as RFC 2104 recommends).
pub const KEY_BYTES: usize = 32;
/// What precedes the hex MAC in a signed payload.
pub const TRAILER_PREFIX: &[u8] = b"\ntl-hmac-sha256=";
/// Bytes the signature adds to a payload.
pub const TRAILER_LEN: usize = TRAILER_PREFIX.len() + 64;

/// What a MAC is over; part of the signed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A records envelope, gateway → aggregator.
    Envelope,
    /// An ack, aggregator → gateway.
    Ack,
}

impl Purpose {
    fn domain(self) -> &'static [u8] {
        match self {
            Purpose::Envelope => b"threadline-envelope-v1",
            Purpose::Ack => b"threadline-ack-v1",
        }
    }
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("unsigned (no tl-hmac-sha256 trailer)")]
    Unsigned,
    #[error("signature does not match any key of gateway {0:?}")]
    Mismatch(String),
    #[error("no key for gateway {0:?}")]
    NoKey(String),
}

/// The keys of one gateway: the first signs, all verify.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<hmac::Key>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        write!(f, "KeyRing({} keys)", self.keys.len())
    }
}

impl KeyRing {
    /// Parses a key file's text (see the module docs); the error says which line is wrong,
    /// never echoing it.
    pub fn parse(text: &str) -> Result<KeyRing, String> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = hex::decode(line)
                .ok()
                .filter(|b| b.len() == KEY_BYTES)
                .ok_or_else(|| {
                    format!(
                        "line {}: not a key (expected {} hex digits, as `keygen` writes)",
                        i + 1,
                        2 * KEY_BYTES
                    )
                })?;
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, &bytes));
        }
        if keys.is_empty() {
            return Err("holds no key".to_owned());
        }
        Ok(KeyRing { keys })
    }

    /// Reads one or more key files (in order: the first key of the first file signs).
    pub fn read(paths: &[&Path]) -> Result<KeyRing, String> {
        let mut keys = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let ring = KeyRing::parse(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            keys.extend(ring.keys);
        }
        Ok(KeyRing { keys })
    }

    /// How many keys verify.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true (a ring holds at least one key); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn mac(key: &hmac::Key, purpose: Purpose, gateway: &str, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(purpose.domain());
        ctx.update(&[0]);
        ctx.update(gateway.as_bytes());
        ctx.update(&[0]);
        ctx.update(body);
        ctx.sign()
    }

    /// Appends the signature trailer to `body` (the JSON, as it will be sent).
    pub fn sign_into(&self, purpose: Purpose, gateway: &str, body: &mut Vec<u8>) {
        let tag = KeyRing::mac(&self.keys[0], purpose, gateway, body);
        body.reserve(TRAILER_LEN);
        body.extend_from_slice(TRAILER_PREFIX);
        body.extend_from_slice(hex::encode(tag.as_ref()).as_bytes());
    }

    /// `body` with its signature trailer.
    pub fn sign(&self, purpose: Purpose, gateway: &str, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + TRAILER_LEN);
        out.extend_from_slice(body);
        self.sign_into(purpose, gateway, &mut out);
        out
    }

    /// Verifies a signed payload; on success returns the JSON before the trailer.
    pub fn verify<'a>(
        &self,
        purpose: Purpose,
        gateway: &str,
        payload: &'a [u8],
    ) -> Result<&'a [u8], VerifyError> {
        let (body, tag) = split(payload).ok_or(VerifyError::Unsigned)?;
        // Hash in place (no copy of the body) and compare the tags in constant time.
        for key in &self.keys {
            let mac = KeyRing::mac(key, purpose, gateway, body);
            if tags_equal(mac.as_ref(), &tag) {
                return Ok(body);
            }
        }
        Err(VerifyError::Mismatch(gateway.to_owned()))
    }
}

/// Whether two MACs are equal, in time independent of where they differ: every byte is
/// compared, the differences are OR-ed together and only the result is branched on
/// (`black_box` keeps the compiler from turning the fold into an early-exit comparison).
/// ring's own comparison is deprecated for outside use, and `subtle` would add a dependency
/// to this crate for these three lines.
fn tags_equal(a: &[u8], b: &[u8; 32]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Splits a payload into its JSON and its MAC, when it ends with a well-formed trailer.
pub fn split(payload: &[u8]) -> Option<(&[u8], [u8; 32])> {
    let cut = payload.len().checked_sub(TRAILER_LEN)?;
    let (body, trailer) = payload.split_at(cut);
    let hex_mac = trailer.strip_prefix(TRAILER_PREFIX)?;
    let mut tag = [0u8; 32];
    hex::decode_to_slice(hex_mac, &mut tag).ok()?;
    Some((body, tag))
}

/// A new random key as a key file's text (one line, 64 hex digits).
pub fn generate_key() -> Result<String, String> {
    let mut bytes = [0u8; KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random number generator failed".to_owned())?;
    Ok(format!("{}\n", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::parse(&generate_key().unwrap()).unwrap()
    }

    #[test]
    fn a_signed_payload_verifies_and_yields_its_json() {
        let k = ring();
        let body = br#"{"v":1,"gateway":"gw-1"}"#;
        let signed = k.sign(Purpose::Envelope, "gw-1", body);
        assert_eq!(signed.len(), body.len() + TRAILER_LEN);
        assert_eq!(
            k.verify(Purpose::Envelope, "gw-1", &signed).unwrap(),
            body.as_slice()
        );
    }

    #[test]
    fn every_change_is_refused() {
        let k = ring();
        let body = br#"{"epoch":"e","ranges":[[1,5]]}"#;
        let signed = k.sign(Purpose::Ack, "gw-1", body);
        // Another gateway, another purpose, another key, a changed byte, no trailer.
        assert!(matches!(
            k.verify(Purpose::Ack, "gw-2", &signed),
            Err(VerifyError::Mismatch(_))
        ));
        assert!(k.verify(Purpose::Envelope, "gw-1", &signed).is_err());
        assert!(ring().verify(Purpose::Ack, "gw-1", &signed).is_err());
        let mut changed = signed.clone();
        changed[20] ^= 1;
        assert!(k.verify(Purpose::Ack, "gw-1", &changed).is_err());
        assert_eq!(
            k.verify(Purpose::Ack, "gw-1", body),
            Err(VerifyError::Unsigned)
        );
    }

    #[test]
    fn during_a_roll_over_both_keys_verify_and_the_first_signs() {
        let old = generate_key().unwrap();
        let new = generate_key().unwrap();
        let both = KeyRing::parse(&format!("# rolled 2026-12-01\n{new}\n{old}")).unwrap();
        assert_eq!(both.len(), 2);
        let by_old = KeyRing::parse(&old)
            .unwrap()
            .sign(Purpose::Envelope, "g", b"{}");
        let by_new = KeyRing::parse(&new)
            .unwrap()
            .sign(Purpose::Envelope, "g", b"{}");
        assert!(both.verify(Purpose::Envelope, "g", &by_old).is_ok());
        assert!(both.verify(Purpose::Envelope, "g", &by_new).is_ok());
        assert_eq!(both.sign(Purpose::Envelope, "g", b"{}"), by_new);
    }

    #[test]
    fn bad_key_files_say_which_line() {
        let e = KeyRing::parse("# c\n\nnot-hex\n").unwrap_err();
        assert!(e.starts_with("line 3: not a key"), "{e}");
        assert!(!e.contains("not-hex"));
        assert_eq!(KeyRing::parse("# only\n").unwrap_err(), "holds no key");
        assert!(KeyRing::parse("abcd\n").is_err());
    }
}
