//! Every command-line tool of the workspace ends quietly when its stdout is a pipe the reader
//! has closed (`threadline-gateway check … | head`): exit status 0, no "failed printing to
//! stdout" panic. The read end is closed before the tool writes anything, so its first line
//! already meets the closed pipe.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `bin args` with its stdout closed by the reader at once; asserts a quiet exit 0.
fn quiet_on_closed_stdout(bin: &Path, args: &[&str]) {
    let what = format!("{} {}", bin.display(), args.join(" "));
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(threadline_e2e::workspace_root())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    // The reader goes away before reading anything.
    drop(child.stdout.take());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: still running 60 s after its stdout closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert_eq!(status.code(), Some(0), "{what}: {status:?}\n{stderr}");
}

#[test]
fn e2e_every_cli_exits_quietly_on_a_closed_stdout() {
    let bins = threadline_e2e::binaries().expect("binaries");
    let dir = tempfile::tempdir().expect("tempdir");
    let bin_dir = bins.sim.parent().expect("target dir").to_owned();
    quiet_on_closed_stdout(
        &bins.gateway,
        &["check", "--config", "config/gateway.example.toml"],
    );
    quiet_on_closed_stdout(&bins.gateway, &["--help"]);
    quiet_on_closed_stdout(
        &bins.aggregator,
        &["check", "--config", "config/aggregator.example.toml"],
    );
    quiet_on_closed_stdout(&bins.aggregator, &["--help"]);
    // Every other subcommand of both binaries that prints to stdout.
    let agg_cfg = dir.path().join("agg.toml");
    std::fs::write(
        &agg_cfg,
        format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[database]\nurl = \"sqlite://{}\"\n",
            dir.path().join("agg.db").display()
        ),
    )
    .expect("aggregator config");
    let agg_cfg = agg_cfg.to_str().expect("utf-8 path");
    quiet_on_closed_stdout(&bins.aggregator, &["verify", "--config", agg_cfg]);
    quiet_on_closed_stdout(
        &bins.aggregator,
        &["dead-letters", "list", "--config", agg_cfg],
    );
    quiet_on_closed_stdout(
        &bins.aggregator,
        &["dead-letters", "replay", "--all", "--config", agg_cfg],
    );
    let keys = dir.path().join("keys");
    quiet_on_closed_stdout(
        &bins.aggregator,
        &[
            "keygen",
            "--gateway",
            "gw-1",
            "--dir",
            keys.to_str().expect("utf-8 path"),
        ],
    );
    quiet_on_closed_stdout(&bins.aggregator, &["broker-acl", "--gateways", "gw-a,gw-b"]);
    let gw_cfg = dir.path().join("gw.toml");
    std::fs::write(
        &gw_cfg,
        format!(
            "[gateway]\nid = \"gw-1\"\nplant = \"p\"\nline = \"l\"\ndata_dir = \"{}\"\n\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n",
            dir.path().join("gw").display()
        ),
    )
    .expect("gateway config");
    let gw_cfg = gw_cfg.to_str().expect("utf-8 path");
    quiet_on_closed_stdout(&bins.gateway, &["buffer", "stats", "--config", gw_cfg]);
    {
        // `probe` against the Modbus simulator.
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let sim = rt
            .block_on(threadline_simulators::modbus::TcpSim::start(
                "127.0.0.1:0".parse().expect("addr"),
                threadline_simulators::modbus::SimBank::new(),
            ))
            .expect("modbus simulator");
        let target = format!("modbus-tcp://{}", sim.local_addr());
        quiet_on_closed_stdout(
            &bins.gateway,
            &["probe", &target, "--holding", "0", "--count", "20"],
        );
        drop(sim);
    }
    let truth = dir.path().join("truth.json");
    quiet_on_closed_stdout(
        &bins.sim,
        &[
            "--config",
            "config/demo/plant.toml",
            "--any-port",
            "--truth",
            truth.to_str().expect("utf-8 path"),
        ],
    );
    let db = format!("sqlite://{}", dir.path().join("gen.db").display());
    quiet_on_closed_stdout(
        &bin_dir.join("threadline-datagen"),
        &["--db", &db, "--units", "5"],
    );
    let (mqtt, http) = (
        free_port().to_string(),
        format!("127.0.0.1:{}", free_port()),
    );
    let demo_dir = dir.path().join("demo");
    quiet_on_closed_stdout(
        &bin_dir.join("threadline-demo"),
        &[
            "--mqtt-port",
            &mqtt,
            "--http",
            &http,
            "--data-dir",
            demo_dir.to_str().expect("utf-8 path"),
            "--duration",
            "30",
        ],
    );
}
