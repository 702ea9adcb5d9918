//! The `.deb` packages (issue 21), built by cargo-deb from the binaries under test and installed
//! with `dpkg --root` into a throw-away root (no container: maintainer scripts run chrootless
//! with `DPKG_ROOT` set, and ours then touch nothing on the host). Then each daemon is started
//! with the packaged systemd unit's own `ExecStart` command line (paths moved into the root),
//! must come up healthy, and must stop cleanly on SIGTERM as systemd stops it.
//!
//! Needs `cargo-deb` (`cargo install cargo-deb`; `scripts/test` installs it) and dpkg; skipped
//! loudly without them, a failure under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use threadline_e2e::{
    Api, Mosquitto, Proc, binaries, free_port, skip_or_fail, wait_for, workspace_root,
};

/// `cargo-deb` on PATH or in `$CARGO_HOME/bin` (default ~/.cargo/bin).
fn cargo_deb() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|h| h.join("bin/cargo-deb"));
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("cargo-deb"))
        .chain(home)
        .find(|p| p.is_file())
}

/// Builds the package of `crate_name` from the already built debug binaries; its path.
fn build_deb(cargo_deb: &Path, crate_name: &str, out: &Path) -> Result<PathBuf> {
    let o = Command::new(cargo_deb)
        .current_dir(workspace_root())
        .args([
            "-p",
            crate_name,
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "-o",
        ])
        .arg(out)
        .output()
        .context("running cargo-deb")?;
    ensure!(
        o.status.success(),
        "cargo deb -p {crate_name}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let deb = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{crate_name}_")) && n.ends_with(".deb"))
        })
        .with_context(|| format!("no {crate_name}_*.deb in {}", out.display()))?;
    Ok(deb)
}

fn run(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        o.status.success(),
        "{cmd:?}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `dpkg --root ROOT -i DEB`: dependencies (libc6, adduser) are the host's, not the root's.
fn install(root: &Path, deb: &Path) -> Result<()> {
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let status = root.join("var/lib/dpkg/status");
    if !status.exists() {
        std::fs::write(&status, "")?;
    }
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "--log=/dev/null",
            "-i",
        ])
        .arg(deb))?;
    Ok(())
}

/// The value of `key=` in a unit file (the last one, as systemd reads it).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

/// The unit's `ExecStart`, its paths moved into `root`.
fn exec_start(unit: &str, root: &Path) -> Result<(PathBuf, Vec<String>)> {
    let line = unit_value(unit, "ExecStart").context("no ExecStart")?;
    let mut words = line.split_whitespace();
    let program = words.next().context("empty ExecStart")?;
    let inside = |p: &str| {
        if p.starts_with('/') {
            root.join(p.trim_start_matches('/'))
                .to_string_lossy()
                .into_owned()
        } else {
            p.to_owned()
        }
    };
    Ok((PathBuf::from(inside(program)), words.map(inside).collect()))
}

/// What every shipped unit must say.
fn check_unit(unit: &str, name: &str) -> Result<()> {
    for (key, want) in [
        ("Restart", "always"),
        ("User", "threadline"),
        ("StateDirectory", name),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("KillSignal", "SIGTERM"),
        ("WantedBy", "multi-user.target"),
    ] {
        ensure!(
            unit_value(unit, key) == Some(want),
            "{name}.service: {key} is {:?}, expected {want:?}",
            unit_value(unit, key)
        );
    }
    ensure!(
        unit_value(unit, "CapabilityBoundingSet") == Some(""),
        "{name}.service: no capabilities expected"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debs_install_into_a_root_and_the_units_command_lines_run() -> Result<()> {
    let Some(cargo_deb) = cargo_deb() else {
        skip_or_fail("cargo-deb not installed (cargo install cargo-deb)");
        return Ok(());
    };
    if !Mosquitto::available() {
        skip_or_fail("mosquitto not installed");
        return Ok(());
    }
    let bins = binaries()?;
    let _ = &bins; // the debug binaries cargo-deb packages (--no-build --profile dev)
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("debs");
    std::fs::create_dir_all(&out)?;
    let root = dir.path().join("root");

    for name in ["threadline-gateway", "threadline-aggregator"] {
        let deb = build_deb(&cargo_deb, name, &out)?;
        let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
        ensure!(info.contains(&format!("Package: {name}")), "{info}");
        ensure!(info.contains("adduser"), "Depends without adduser: {info}");
        let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb))?;
        for f in [
            format!("./usr/bin/{name}"),
            format!("./lib/systemd/system/{name}.service"),
            format!("./usr/share/doc/{name}/operations.md"),
        ] {
            ensure!(
                contents.contains(&f),
                "{name}: {f} not in the package:\n{contents}"
            );
        }
        install(&root, &deb)?;
        let listed = run(Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["-s", name]))?;
        ensure!(listed.contains("Status: install ok installed"), "{listed}");
    }
    ensure!(
        root.join("etc/threadline").is_dir(),
        "postinst did not create /etc/threadline in the root"
    );

    let broker = Mosquitto::start().await;
    // The aggregator, as its unit starts it, on SQLite in its StateDirectory.
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/threadline-aggregator.service"))?;
    check_unit(&unit, "threadline-aggregator")?;
    let state = root
        .join("var/lib")
        .join(unit_value(&unit, "StateDirectory").unwrap_or_default());
    std::fs::create_dir_all(&state)?;
    let http = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        root.join("etc/threadline/aggregator.toml"),
        format!(
            "[aggregator]\nid = \"agg-pkg\"\n[mqtt]\nurl = \"{}\"\n[database]\nurl = \"sqlite://{}/threadline.db\"\n\
             [http]\nlisten = \"{http}\"\n",
            broker.url(),
            state.display()
        ),
    )?;
    let (program, args) = exec_start(&unit, &root)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut aggregator = Proc::start("aggregator", dir.path(), &program, &args)?;
    Api::new(&http)
        .wait_healthy(Duration::from_secs(60))
        .await
        .with_context(|| aggregator.output())?;

    // The gateway, as its unit starts it, its data_dir the unit's StateDirectory.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/threadline-gateway.service"))?;
    check_unit(&unit, "threadline-gateway")?;
    ensure!(
        unit_value(&unit, "ExecReload") == Some("/bin/kill -HUP $MAINPID"),
        "threadline-gateway.service: `systemctl reload` must send SIGHUP (live reload), ExecReload is {:?}",
        unit_value(&unit, "ExecReload")
    );
    let state = root
        .join("var/lib")
        .join(unit_value(&unit, "StateDirectory").unwrap_or_default());
    std::fs::create_dir_all(&state)?;
    let health = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        root.join("etc/threadline/gateway.toml"),
        format!(
            "[gateway]\nid = \"gw-pkg\"\nplant = \"plant-a\"\nline = \"line-1\"\ndata_dir = \"{}\"\n\n\
             [mqtt]\nurl = \"{}\"\n\n[health]\nlisten = \"{health}\"\n",
            state.display(),
            broker.url()
        ),
    )?;
    let (program, args) = exec_start(&unit, &root)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gateway = Proc::start("gateway", dir.path(), &program, &args)?;
    let client = reqwest::Client::new();
    wait_for(
        "the packaged gateway healthy",
        Duration::from_secs(30),
        || async {
            let r = client
                .get(format!("http://{health}/healthz"))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await
    .with_context(|| gateway.output())?;
    ensure!(
        state.join("outbox.db").exists(),
        "no outbox in the StateDirectory"
    );
    // The aggregator saw the gateway come online (its retained status).
    wait_for(
        "the gateway known to the aggregator",
        Duration::from_secs(30),
        || async {
            let (status, v) = Api::new(&http).get("/api/v1/gateways").await.ok()?;
            (status == 200 && v.to_string().contains("gw-pkg")).then_some(())
        },
    )
    .await
    .with_context(|| format!("{}\n{}", gateway.output(), aggregator.output()))?;

    // systemd stops with SIGTERM (KillSignal): both exit 0 within TimeoutStopSec.
    for (name, p) in [("gateway", &mut gateway), ("aggregator", &mut aggregator)] {
        match p.terminate(Duration::from_secs(30)) {
            Some(0) => {}
            other => bail!(
                "{name} did not stop cleanly on SIGTERM: {other:?}\n{}",
                p.output()
            ),
        }
    }

    // Removal keeps the plant's data (the state directories), as postrm says.
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-not-root",
            "--log=/dev/null",
            "-r",
            "threadline-gateway",
        ]))?;
    ensure!(
        !root.join("usr/bin/threadline-gateway").exists(),
        "binary left after removal"
    );
    ensure!(
        state.join("outbox.db").exists(),
        "removal deleted the outbox"
    );
    Ok(())
}
