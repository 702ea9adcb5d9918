//! The shipped Prometheus alert rules (`config/prometheus/threadline-alerts.yml`) are valid
//! (`promtool check rules`) and fire as their unit tests say (`promtool test rules`: a gateway
//! offline, a refused ack subscription, dead letters, a seq gap — and not before their `for`).
//! promtool comes from Debian's `prometheus` package (`PROMTOOL=/path/to/promtool` to use
//! another); without it the test is skipped loudly (a failure under CI=true).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, ensure};
use threadline_e2e::{skip_or_fail, workspace_root};

fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|f| f.is_file())
    })
}

#[test]
fn shipped_alert_rules_are_valid_and_fire_as_tested() -> Result<()> {
    let Some(promtool) = promtool() else {
        skip_or_fail(
            "promtool not found; install it (apt-get install prometheus, or set PROMTOOL) to \
             check the shipped alert rules",
        );
        return Ok(());
    };
    let dir = workspace_root().join("config/prometheus");
    for args in [
        ["check", "rules", "threadline-alerts.yml"],
        ["test", "rules", "threadline-alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            out.status.success() && said.contains("SUCCESS"),
            "promtool {}: {}\n{said}",
            args.join(" "),
            out.status
        );
    }
    Ok(())
}
