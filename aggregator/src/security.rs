//! The security commands of `threadline-aggregator` (docs/security.md):
//!
//! - `keygen --gateway ID --dir DIR`: a new random signing key for one gateway, mode 0600;
//! - `broker-acl --gateways gw-a,gw-b`: a Mosquitto `acl_file` for the topic layout of the
//!   MQTT contract, each gateway user confined to its own topics.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use threadline_shared::topic::check_level;

use crate::ingest::GatewayKeys;

/// What `keygen` wrote.
#[derive(Debug)]
pub struct NewKey {
    pub path: PathBuf,
    /// True when `{id}.key` existed and the new key went to `{id}.key.next` (a roll-over).
    pub roll_over: bool,
}

/// Writes a new random key for `gateway` into `dir` (created, mode 0700, when missing):
/// `{id}.key`, or `{id}.key.next` when `{id}.key` exists (the start of a roll-over). Never
/// overwrites a key.
pub fn keygen(gateway: &str, dir: &Path) -> Result<NewKey, String> {
    check_level("gateway", gateway).map_err(|e| e.to_string())?;
    if gateway.starts_with('.') || gateway.contains(char::is_whitespace) {
        return Err(format!("{gateway:?} is not a gateway id"));
    }
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let main = GatewayKeys::path_of(dir, gateway);
    let next = PathBuf::from(format!("{}.next", main.display()));
    let (path, roll_over) = if !main.exists() {
        (main, false)
    } else if !next.exists() {
        (next, true)
    } else {
        return Err(format!(
            "{} and {} both exist: finish the roll-over first (docs/security.md, \
             \"Key rotation\"): move the .next file over the .key file once the gateway signs \
             with the new key",
            main.display(),
            next.display()
        ));
    };
    let key = threadline_shared::signing::generate_key()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(key.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(NewKey { path, roll_over })
}

/// The Mosquitto `acl_file` (see the module docs): the aggregator user reads every gateway's
/// records and status and writes acks; each gateway user (named like its gateway id) writes
/// only its own records and status and reads only its own ack, the plant's holds and the
/// aggregators' online status (`{root}/_aggregator/{id}/status`, which makes it re-send).
pub fn broker_acl(
    root: &str,
    aggregator_user: &str,
    gateways: &[String],
) -> Result<String, String> {
    for g in gateways.iter().chain([&aggregator_user.to_owned()]) {
        check_level("gateway", g).map_err(|e| e.to_string())?;
        if g.contains(char::is_whitespace) {
            return Err(format!(
                "{g:?}: a user name in an acl_file cannot hold whitespace"
            ));
        }
    }
    if gateways.is_empty() {
        return Err("name at least one gateway (--gateways gw-a,gw-b)".to_owned());
    }
    let mut s = String::new();
    s.push_str(
        "# Mosquitto acl_file for Threadline, written by `threadline-aggregator broker-acl`.\n\
         # Use with `allow_anonymous false`, a password_file (mosquitto_passwd) holding one user\n\
         # per gateway (named like the gateway id) and the aggregator's user.\n\
         # Topics: {root}/{plant}/{line}/{gateway}/records|status|ack (docs/security.md).\n\n",
    );
    s.push_str(&format!(
        "# The aggregator: reads records and status of every gateway, writes acks and holds.\n\
         user {aggregator_user}\n\
         topic read {root}/+/+/+/records\n\
         topic read {root}/+/+/+/status\n\
         topic write {root}/+/+/+/ack\n\
         topic readwrite {root}/+/holds\n\
         topic readwrite {root}/_aggregator/+/status\n"
    ));
    for g in gateways {
        s.push_str(&format!(
            "\n# Gateway {g}: only its own records and status, only its own acks.\n\
             user {g}\n\
             topic write {root}/+/+/{g}/records\n\
             topic readwrite {root}/+/+/{g}/status\n\
             topic read {root}/+/+/{g}/ack\n\
             topic read {root}/+/holds\n\
             topic read {root}/_aggregator/+/status\n"
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_key_then_a_roll_over_key_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let first = keygen("gw-1", &keys).unwrap();
        assert!(!first.roll_over);
        assert_eq!(first.path, keys.join("gw-1.key"));
        let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let text = std::fs::read_to_string(&first.path).unwrap();
        assert!(threadline_shared::signing::KeyRing::parse(&text).is_ok());
        let second = keygen("gw-1", &keys).unwrap();
        assert!(second.roll_over);
        assert_eq!(second.path, keys.join("gw-1.key.next"));
        assert_ne!(std::fs::read_to_string(&second.path).unwrap(), text);
        assert!(keygen("gw-1", &keys).unwrap_err().contains("roll-over"));
        assert_eq!(std::fs::read_to_string(&first.path).unwrap(), text);
        assert!(keygen("gw/../x", &keys).is_err());
    }

    #[test]
    fn the_acl_confines_each_gateway() {
        let acl = broker_acl("threadline/v1", "agg", &["gw-a".into(), "gw-b".into()]).unwrap();
        assert!(acl.contains("user gw-a\ntopic write threadline/v1/+/+/gw-a/records\n"));
        assert!(acl.contains("topic read threadline/v1/+/+/gw-b/ack\n"));
        assert!(!acl.contains("gw-a/ack\ntopic write"));
        assert!(broker_acl("threadline/v1", "agg", &["a+b".into()]).is_err());
        assert!(broker_acl("threadline/v1", "agg", &[]).is_err());
    }
}
