//! Who may connect to the embedded broker: the users of a Mosquitto `password_file`, checked by
//! rumqttd's auth hook, and the aggregator's own ingest client.
//!
//! File format (what `mosquitto_passwd` writes, so one file serves either broker): one
//! `username:hash` per line, blank lines and `#` comments ignored. Hashes:
//! - `$7$ITERATIONS$SALT$HASH` — PBKDF2-HMAC-SHA512 (Mosquitto ≥ 2.0, the default);
//! - `$6$SALT$HASH` — SHA-512(password ‖ salt) (Mosquitto ≤ 1.6, `-H sha512`);
//!
//! with salt and hash in standard base64. Plain-text passwords and other schemes are refused at
//! load with the line. Verification is constant-time (`ring::pbkdf2::verify`, an XOR fold for
//! `$6$`), and an unknown user costs the same work as a known one, so timing does not tell
//! which users exist.
//!
//! The ingest client of the same process does not need a line in the file: it logs in as
//! [`INTERNAL_USER`] with a random password made at start that never leaves the process.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest;
use ring::pbkdf2;

/// The user name of the in-process ingest client (not a valid Mosquitto user name by accident:
/// it cannot collide with a gateway id, which has no `@`).
pub const INTERNAL_USER: &str = "threadline-ingest@embedded";

/// How the embedded broker admits clients.
#[derive(Debug, Clone)]
pub enum BrokerAuth {
    /// Anyone (`[mqtt] allow_anonymous = true`).
    Anonymous,
    /// The users of a password file (and the internal ingest client).
    Users(std::sync::Arc<BrokerUsers>),
}

#[derive(Clone)]
enum Hash {
    Pbkdf2Sha512 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

/// The users of a password file.
#[derive(Clone)]
pub struct BrokerUsers {
    users: HashMap<String, Hash>,
}

impl std::fmt::Debug for BrokerUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only.
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("BrokerUsers")
            .field("users", &names)
            .finish()
    }
}

fn b64(what: &str, s: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(s)
        .map_err(|e| format!("the {what} is not base64 ({e})"))
}

fn parse_hash(h: &str) -> Result<Hash, String> {
    let parts: Vec<&str> = h.split('$').collect();
    match parts.as_slice() {
        ["", "7", iterations, salt, hash] => {
            let iterations = iterations
                .parse::<u32>()
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| format!("{iterations:?} is not an iteration count"))?;
            let hash = b64("hash", hash)?;
            if hash.len() != 64 {
                return Err(format!(
                    "the hash has {} bytes, PBKDF2-SHA512 gives 64",
                    hash.len()
                ));
            }
            Ok(Hash::Pbkdf2Sha512 {
                iterations,
                salt: b64("salt", salt)?,
                hash,
            })
        }
        ["", "6", salt, hash] => {
            let hash = b64("hash", hash)?;
            if hash.len() != 64 {
                return Err(format!(
                    "the hash has {} bytes, SHA-512 gives 64",
                    hash.len()
                ));
            }
            Ok(Hash::Sha512 {
                salt: b64("salt", salt)?,
                hash,
            })
        }
        ["", scheme, ..] => Err(format!(
            "hash scheme ${scheme}$ is not supported (use mosquitto_passwd's default \
             sha512-pbkdf2, `$7$…`, or `-H sha512`, `$6$…`)"
        )),
        _ => Err("not a hashed password (plain-text passwords are refused: \
                  hash the file with `mosquitto_passwd -U FILE`)"
            .to_owned()),
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Hash {
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            Hash::Sha512 { salt, hash } => {
                let mut ctx = digest::Context::new(&digest::SHA512);
                ctx.update(password);
                ctx.update(salt);
                ct_eq(ctx.finish().as_ref(), hash)
            }
        }
    }
}

/// What an unknown user is checked against, so that it costs what a known one does.
fn dummy_hash() -> &'static Hash {
    static DUMMY: OnceLock<Hash> = OnceLock::new();
    DUMMY.get_or_init(|| Hash::Pbkdf2Sha512 {
        iterations: NonZeroU32::new(101).unwrap_or(NonZeroU32::MIN),
        salt: vec![0; 12],
        hash: vec![0; 64],
    })
}

/// The ingest client's password: 32 random bytes (hex), made once per process.
pub fn internal_password() -> &'static str {
    static PASSWORD: OnceLock<String> = OnceLock::new();
    PASSWORD.get_or_init(|| {
        let mut b = [0u8; 32];
        // The system CSPRNG; if it fails there is no safe password to make.
        #[allow(clippy::expect_used)]
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .expect("the system random number generator failed");
        hex::encode(b)
    })
}

impl BrokerUsers {
    /// Reads and parses a password file; every bad line is reported (`line N: …`).
    pub fn load(path: &Path) -> Result<BrokerUsers, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        BrokerUsers::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the text of a password file.
    pub fn parse(text: &str) -> Result<BrokerUsers, String> {
        let mut users = HashMap::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let Some((user, hash)) = line.split_once(':') else {
                problems.push(format!("line {n}: expected `username:hash`"));
                continue;
            };
            if user.is_empty() {
                problems.push(format!("line {n}: empty user name"));
                continue;
            }
            match parse_hash(hash) {
                Ok(h) => {
                    if users.insert(user.to_owned(), h).is_some() {
                        problems.push(format!("line {n}: user {user:?} appears twice"));
                    }
                }
                Err(e) => problems.push(format!("line {n}: user {user:?}: {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if users.is_empty() {
            return Err("no users (one `username:hash` line per gateway, \
                        written by mosquitto_passwd)"
                .to_owned());
        }
        Ok(BrokerUsers { users })
    }

    /// Number of users in the file.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file had no users (never, for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` may log in with `password`: a file user with the right password, or the
    /// in-process ingest client.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        if user == INTERNAL_USER {
            return ct_eq(password.as_bytes(), internal_password().as_bytes());
        }
        match self.users.get(user) {
            Some(h) => h.verify(password.as_bytes()),
            None => {
                let _ = dummy_hash().verify(password.as_bytes());
                false
            }
        }
    }
}

/// Logs a refused login at most once per 10 s (with the number refused meanwhile), so that a
/// client retrying with a wrong password, or someone guessing, does not flood the log.
pub fn log_refused(client_id: &str, user: &str) {
    static LAST_S: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST_S.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST_S
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let before = SUPPRESSED.swap(0, Ordering::Relaxed);
        tracing::warn!(
            client_id,
            user,
            refused_since_last_log = before,
            "embedded MQTT broker refused a login (unknown user, wrong password or anonymous)"
        );
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `mosquitto_passwd -b -c f alice secret` (Mosquitto 2.0, `$7$`) and
    // `mosquitto_passwd -H sha512 -b f bob hunter2` (`$6$`).
    const ALICE: &str = "alice:$7$101$QmP7c0j/khrqPCK7$EFZeIhofbGeNF8Y/c232qOuL4E9M15ADR/vQYU66hJngTU1YXHQ15QwTGZcmjHBSYYuzdlIhs6XB443JxYBjlg==";
    const BOB: &str = "bob:$6$Cb4nfNFYQcIW2mYY$FEgWE+X3qxUuJUYQI6AcWbUgABE51R1+8GGQbN3ILRtvwO2da3nxYKvtqy7Z0v7VF1J5KUDDPoT72wAB9M00nw==";

    #[test]
    fn mosquitto_lines_verify_only_their_password() {
        let u = BrokerUsers::parse(&format!("# users\n\n{ALICE}\n{BOB}\n")).unwrap();
        assert_eq!(u.len(), 2);
        assert!(u.verify("bob", "hunter2"));
        assert!(!u.verify("bob", "hunter3"));
        assert!(!u.verify("bob", "secret"));
        assert!(u.verify("alice", "secret"));
        assert!(!u.verify("alice", "secreT"));
        assert!(!u.verify("alice", ""));
        assert!(!u.verify("mallory", "secret"));
        assert!(!format!("{u:?}").contains("EFZe"));
    }

    #[test]
    fn the_internal_user_needs_the_process_password() {
        let u = BrokerUsers::parse(ALICE).unwrap();
        assert!(u.verify(INTERNAL_USER, internal_password()));
        assert!(!u.verify(INTERNAL_USER, "guess"));
        assert_eq!(internal_password().len(), 64);
    }

    #[test]
    fn bad_lines_are_all_reported_with_their_numbers() {
        let e = BrokerUsers::parse("alice:plain\nbob\n:$7$1$AA==$AA==\ncarol:$argon2id$x\n")
            .unwrap_err();
        assert!(
            e.contains("line 1: user \"alice\": not a hashed password"),
            "{e}"
        );
        assert!(e.contains("line 2: expected `username:hash`"), "{e}");
        assert!(e.contains("line 3: empty user name"), "{e}");
        assert!(
            e.contains("line 4: user \"carol\": hash scheme $argon2id$"),
            "{e}"
        );
        assert!(
            BrokerUsers::parse("# nobody\n")
                .unwrap_err()
                .contains("no users")
        );
        let dup = BrokerUsers::parse(&format!("{ALICE}\n{ALICE}\n")).unwrap_err();
        assert!(
            dup.contains("line 2: user \"alice\" appears twice"),
            "{dup}"
        );
    }
}
