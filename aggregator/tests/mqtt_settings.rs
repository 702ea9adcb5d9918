//! The real binary refuses MQTT settings that cannot work — `check` and `run` alike, with the
//! file, line, key and reason — before anything listens.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_threadline-aggregator");

#[test]
fn check_and_run_refuse_an_unreadable_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let db = dir.path().join("agg.db");
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nurl = \"mqtts://127.0.0.1:1\"\nca_file = \"{}\"\n\n\
             [database]\nurl = \"sqlite://{}\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
            ca.display(),
            db.display()
        ),
    )
    .expect("write config");
    for cmd in ["check", "run"] {
        let out = Command::new(BIN)
            .args([cmd, "--config"])
            .arg(&cfg)
            .output()
            .expect("run the aggregator");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains(&format!(
                "agg.toml:3:1: mqtt.ca_file: cannot read {}",
                ca.display()
            )),
            "{cmd}: {err}"
        );
    }
    assert!(
        !db.exists(),
        "run opened the database with unusable MQTT settings"
    );
}
