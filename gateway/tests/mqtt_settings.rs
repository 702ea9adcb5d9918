//! The real binary refuses MQTT settings that cannot work — `check` and `run` alike, with the
//! file, line, key and reason — and `run` then acquires nothing.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_threadline-gateway");

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
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("run the gateway");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("gw.toml:8:1: mqtt.url:")
            && err.contains("set `username` and `password_file`")
            && !err.contains("s3cret"),
        "{err}"
    );
}
