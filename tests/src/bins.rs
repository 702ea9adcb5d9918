//! The binaries under test. `cargo test -p threadline-e2e` does not build other packages'
//! binaries, so [`binaries`] runs `cargo build --bins -p threadline-gateway -p
//! threadline-aggregator -p threadline-simulators` once per test process (a no-op when they are
//! up to date) and finds them in the target directory (`CARGO_TARGET_DIR` or
//! `<workspace>/target`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Paths of the three binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    pub gateway: PathBuf,
    pub aggregator: PathBuf,
    pub sim: PathBuf,
}

/// Builds (once per process) and locates the binaries.
pub fn binaries() -> Result<Bins> {
    static BUILT: OnceLock<Result<Bins, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_binaries().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_binaries() -> Result<Bins> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // THREADLINE_E2E_RELEASE=1: release binaries (the benchmarks that run through these tests).
    let release = std::env::var("THREADLINE_E2E_RELEASE").is_ok_and(|v| v == "1");
    let mut build = Command::new(&cargo);
    // Not the variables `cargo test` sets for this test process (CARGO_MANIFEST_DIR, …): ring's
    // build script reruns when CARGO_MANIFEST_DIR changes, so inheriting it made this build and
    // the next `cargo test` rebuild ring, rustls, rumqttc and the workspace every time.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || k == "CARGO_PRIMARY_PACKAGE"
            || k == "CARGO_TARGET_TMPDIR"
        {
            build.env_remove(&key);
        }
    }
    let status = build
        .current_dir(workspace_root())
        .args([
            "build",
            "--bins",
            "-p",
            "threadline-gateway",
            "-p",
            "threadline-aggregator",
            "-p",
            "threadline-simulators",
        ])
        .args(release.then_some("--release"))
        .status()
        .with_context(|| format!("running {cargo} build"))?;
    if !status.success() {
        bail!("cargo build of the binaries failed: {status}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join(if release { "release" } else { "debug" });
    let bins = Bins {
        gateway: dir.join("threadline-gateway"),
        aggregator: dir.join("threadline-aggregator"),
        sim: dir.join("threadline-sim"),
    };
    for b in [&bins.gateway, &bins.aggregator, &bins.sim] {
        if !b.exists() {
            bail!("{} was not built", b.display());
        }
    }
    Ok(bins)
}
