//! A config with a mistake is refused by the real binary with file:line:col.

use std::process::Command;

#[test]
fn e2e_gateway_check_reports_a_mistake_with_its_place() {
    let bins = threadline_e2e::binaries().expect("binaries");
    let dir = tempfile::tempdir().expect("tempdir");
    let good =
        std::fs::read_to_string(threadline_e2e::workspace_root().join("config/demo/line-1.toml"))
            .expect("line-1.toml");
    let ok = Command::new(&bins.gateway)
        .args(["check", "--config"])
        .arg(threadline_e2e::workspace_root().join("config/demo/line-1.toml"))
        .output()
        .expect("run check");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A typo in a key: `scan_msec` instead of `scan_ms`.
    let bad = good.replacen("scan_ms = 50", "scan_msec = 50", 1);
    let line = bad
        .lines()
        .position(|l| l.contains("scan_msec"))
        .expect("typo line")
        + 1;
    let path = dir.path().join("line-1.toml");
    std::fs::write(&path, bad).expect("write");
    let out = Command::new(&bins.gateway)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("line-1.toml:{line}:")) && err.contains("scan_msec"),
        "{err}"
    );
}
