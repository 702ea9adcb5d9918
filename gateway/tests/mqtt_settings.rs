//! The real binary refuses MQTT settings that cannot work — `check` and `run` alike, with the
//! file, line, key and reason — and `run` then acquires nothing: an unreadable `password_file`
//! or `ca_file` (missing, or a directory: the tests run as root, for whom a mode-000 file is
//! readable), credentials in the URL.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_threadline-gateway");

/// Runs `check` and `run` on `cfg`; both must exit with 2 and say every `expected` text, never
/// `secret`; `run` must not have started (no data_dir).
fn both_refuse(dir: &Path, cfg: &Path, expected: &[String], secret: Option<&str>) {
    for cmd in ["check", "run"] {
        let out = Command::new(BIN)
            .args([cmd, "--config"])
            .arg(cfg)
            .output()
            .expect("run the gateway");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        for want in expected {
            assert!(
                err.contains(want.as_str()),
                "{cmd}: missing {want:?} in:\n{err}"
            );
        }
        if let Some(secret) = secret {
            assert!(!err.contains(secret), "{cmd} echoed the secret: {err}");
        }
    }
    assert!(
        !dir.join("data").exists(),
        "run started (created data_dir) without being able to publish"
    );
}

fn write_config(dir: &std::path::Path, mqtt: &str) -> std::path::PathBuf {
    let path = dir.join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nid = \"gw-1\"\nplant = \"p\"\nline = \"l\"\ndata_dir = \"{}\"\n\n\
             [mqtt]\n{mqtt}\n",
            dir.join("data").display()
        ),
    )
    .expect("write config");
    path
}

#[test]
fn check_and_run_refuse_an_unreadable_password_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pass = dir.path().join("gw.pass");
    let cfg = write_config(
        dir.path(),
        &format!(
            "url = \"mqtt://127.0.0.1:1\"\nusername = \"gw\"\npassword_file = \"{}\"",
            pass.display()
        ),
    );
    for cmd in ["check", "run"] {
        let out = Command::new(BIN)
            .args([cmd, "--config"])
            .arg(&cfg)
            .output()
            .expect("run the gateway");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains(&format!(
                "gw.toml:10:1: mqtt.password_file: cannot read {}",
                pass.display()
            )),
            "{cmd}: {err}"
        );
    }
    assert!(
        !dir.path().join("data").exists(),
        "run started (created data_dir) without being able to publish"
    );
    // Once the file exists, `check` passes and shows the connection (never the password).
    std::fs::write(&pass, "s3cret\n").expect("write password");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("broker: mqtt://127.0.0.1:1 (user \"gw\"; keep-alive 15 s)")
            && !stdout.contains("s3cret"),
        "{stdout}"
    );
}

#[test]
fn a_url_with_credentials_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "url = \"mqtt://gw:s3cret@127.0.0.1:1883\"");
    both_refuse(
        dir.path(),
        &cfg,
        &[
            "gw.toml:8:1: mqtt.url:".to_owned(),
            "set `username` and `password_file`".to_owned(),
        ],
        Some("s3cret"),
    );
}

#[test]
fn a_password_file_that_is_a_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pass = dir.path().join("secrets");
    std::fs::create_dir(&pass).expect("mkdir");
    let cfg = write_config(
        dir.path(),
        &format!(
            "url = \"mqtt://127.0.0.1:1\"\nusername = \"gw\"\npassword_file = \"{}\"",
            pass.display()
        ),
    );
    both_refuse(
        dir.path(),
        &cfg,
        &[format!(
            "gw.toml:10:1: mqtt.password_file: cannot read {}: Is a directory",
            pass.display()
        )],
        None,
    );
}

#[test]
fn an_unreadable_ca_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("ca.pem");
    let a_dir = dir.path().join("certs");
    std::fs::create_dir(&a_dir).expect("mkdir");
    for (ca, why) in [
        (&missing, "No such file or directory"),
        (&a_dir, "Is a directory"),
    ] {
        let cfg = write_config(
            dir.path(),
            &format!(
                "url = \"mqtts://127.0.0.1:8883\"\nca_file = \"{}\"",
                ca.display()
            ),
        );
        both_refuse(
            dir.path(),
            &cfg,
            &[format!(
                "gw.toml:9:1: mqtt.ca_file: cannot read {}: {why}",
                ca.display()
            )],
            None,
        );
    }
    // A readable file that holds no certificate is refused too.
    std::fs::write(&missing, "not a certificate\n").expect("write");
    let cfg = write_config(
        dir.path(),
        &format!(
            "url = \"mqtts://127.0.0.1:8883\"\nca_file = \"{}\"",
            missing.display()
        ),
    );
    both_refuse(
        dir.path(),
        &cfg,
        &[
            "gw.toml:9:1: mqtt.ca_file:".to_owned(),
            "holds no certificate".to_owned(),
        ],
        None,
    );
}
