//! The gateways' signing keys: `[mqtt] gateway_keys_dir = DIR` holds `DIR/{gateway_id}.key`
//! (written by `threadline-aggregator keygen`) and, during a key roll-over,
//! `DIR/{gateway_id}.key.next`. An envelope is accepted when signed with any key of either
//! file; acks are signed with the first key of `{id}.key` (docs/security.md, "Key rotation").
//!
//! Files are re-read at most every [`RELOAD`] per gateway, so a key added or rolled over takes
//! effect without a restart, while a flood of messages costs no more than a map lookup each.
//! A gateway without a key file has every envelope dead-lettered (`bad signature`): with a keys
//! directory configured, signing is required of every gateway.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use threadline_shared::signing::{KeyRing, VerifyError};

/// How long a read key file (or its absence) is trusted before it is read again.
pub const RELOAD: Duration = Duration::from_secs(10);

/// A gateway's keys as last read: when, and the keys or why there are none.
type CachedKeys = (Instant, Result<Arc<KeyRing>, String>);

/// The keys of every gateway, read from a directory on demand.
#[derive(Debug)]
pub struct GatewayKeys {
    dir: PathBuf,
    /// Per gateway: when read, and the keys (or why there are none, for the dead letter).
    cache: Mutex<HashMap<String, CachedKeys>>,
}

impl GatewayKeys {
    /// The keys under `dir`, which must be a readable directory.
    pub fn open(dir: &Path) -> Result<GatewayKeys, String> {
        std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read the directory {}: {e}", dir.display()))?;
        Ok(GatewayKeys {
            dir: dir.to_owned(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Where the key of `gateway` belongs.
    pub fn path_of(dir: &Path, gateway: &str) -> PathBuf {
        dir.join(format!("{gateway}.key"))
    }

    /// The keys of `gateway`: `{id}.key` (its first key signs acks), then `{id}.key.next`.
    pub fn get(&self, gateway: &str) -> Result<Arc<KeyRing>, VerifyError> {
        // A topic level never holds `/`; refuse anything else that could leave the directory.
        if gateway.is_empty() || gateway.starts_with('.') || gateway.contains(['/', '\\', '\0']) {
            return Err(VerifyError::NoKey(gateway.to_owned()));
        }
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = cache
            .get(gateway)
            .is_some_and(|(at, _)| at.elapsed() < RELOAD);
        if !fresh {
            let loaded = self.read(gateway);
            if let Err(e) = &loaded {
                tracing::warn!(gateway, error = %e, "no usable signing key for this gateway; its envelopes are dead-lettered (bad signature)");
            }
            cache.insert(gateway.to_owned(), (Instant::now(), loaded));
        }
        match &cache[gateway].1 {
            Ok(k) => Ok(k.clone()),
            Err(_) => Err(VerifyError::NoKey(gateway.to_owned())),
        }
    }

    fn read(&self, gateway: &str) -> Result<Arc<KeyRing>, String> {
        let main = GatewayKeys::path_of(&self.dir, gateway);
        let mut next = main.clone().into_os_string();
        next.push(".next");
        let next = PathBuf::from(next);
        let mut paths = vec![main.as_path()];
        if next.exists() {
            paths.push(next.as_path());
        }
        KeyRing::read(&paths).map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_shared::signing::{Purpose, generate_key};

    #[test]
    fn both_files_verify_during_a_roll_over_and_the_main_key_signs() {
        let dir = tempfile::tempdir().unwrap();
        let old = generate_key().unwrap();
        let new = generate_key().unwrap();
        std::fs::write(dir.path().join("gw-1.key"), &old).unwrap();
        std::fs::write(dir.path().join("gw-1.key.next"), &new).unwrap();
        let keys = GatewayKeys::open(dir.path()).unwrap();
        let ring = keys.get("gw-1").unwrap();
        assert_eq!(ring.len(), 2);
        let by_new = KeyRing::parse(&new)
            .unwrap()
            .sign(Purpose::Envelope, "gw-1", b"{}");
        assert!(ring.verify(Purpose::Envelope, "gw-1", &by_new).is_ok());
        let by_old = KeyRing::parse(&old)
            .unwrap()
            .sign(Purpose::Ack, "gw-1", b"{}");
        assert_eq!(ring.sign(Purpose::Ack, "gw-1", b"{}"), by_old);
        assert!(matches!(keys.get("gw-2"), Err(VerifyError::NoKey(_))));
        assert!(matches!(keys.get("../gw-1"), Err(VerifyError::NoKey(_))));
        assert!(GatewayKeys::open(&dir.path().join("missing")).is_err());
    }
}
