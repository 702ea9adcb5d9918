//! The real `threadline-gateway run` binary, killed with SIGKILL while it produces and
//! publishes, then restarted: every record it had committed arrives, in seq order, in the same
//! epoch. Then SIGTERM: a graceful exit (status 0) with the retained offline status.

#![allow(clippy::unwrap_used)]

mod delivery_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use delivery_support::*;
use threadline_gateway::outbox::read_file_stats;
use threadline_shared::envelope::GatewayState;

const ROOT: &str = "threadline/v1";

fn spawn_gateway(config: &std::path::Path, log: &std::path::Path, extra: &[&str]) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_threadline-gateway"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_then_restart_loses_nothing_and_sigterm_exits_cleanly() {
    if !have_mosquitto() {
        return;
    }
    let broker = Mosquitto::start().await;
    let acker = Acker::start(broker.port, ROOT).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        gateway_toml(&data_dir, &broker.url(), "batch_max_records = 200", 64),
    )
    .unwrap();

    let mut gw = spawn_gateway(
        &config,
        &dir.path().join("run1.log"),
        &["--synthetic-rate", "5000", "--synthetic-event-every", "25"],
    );
    wait_for("records flowing", Duration::from_secs(20), || {
        acker.count() >= 1500
    })
    .await;
    gw.kill().unwrap(); // SIGKILL
    gw.wait().unwrap();

    let before = read_file_stats(&outbox_path(&data_dir)).await.unwrap();
    let last_seq = before.next_seq - 1;
    assert!(last_seq >= 1500);
    // The operator's view of the same file.
    let out = Command::new(env!("CARGO_BIN_EXE_threadline-gateway"))
        .args(["buffer", "stats", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("epoch:       {}", before.epoch)),
        "{text}"
    );
    assert!(
        text.contains(&format!("next seq:    {}", before.next_seq)),
        "{text}"
    );
    assert!(
        text.contains("readings") && text.contains("oldest age"),
        "{text}"
    );

    // Restart without the synthetic source: it only has to deliver what it committed.
    let mut gw = spawn_gateway(&config, &dir.path().join("run2.log"), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = read_file_stats(&outbox_path(&data_dir)).await.unwrap();
        assert_eq!(s.epoch, before.epoch, "same outbox, same epoch");
        assert_eq!(s.next_seq, before.next_seq, "nothing new was produced");
        if s.readings + s.events == 0 && acker.count() as u64 >= last_seq {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered after restart: {s:?}, acker has {}; log: {}",
            acker.count(),
            std::fs::read_to_string(dir.path().join("run2.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_complete(&acker.seen.lock().unwrap(), before.epoch, last_seq, 25);

    // Graceful stop: exit 0 within a bound, retained offline status.
    let pid = gw.id().to_string();
    let stopped_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(st) = gw.try_wait().unwrap() {
            break st;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "no exit 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    wait_for("offline status", Duration::from_secs(5), || {
        acker
            .seen
            .lock()
            .unwrap()
            .statuses
            .last()
            .is_some_and(|s| s.state == GatewayState::Offline)
    })
    .await;
    // A late subscriber sees the retained offline status too.
    let late = Acker::start(broker.port, ROOT).await;
    wait_for("retained offline status", Duration::from_secs(5), || {
        late.seen
            .lock()
            .unwrap()
            .statuses
            .first()
            .is_some_and(|s| s.state == GatewayState::Offline && s.buffer_depth == 0)
    })
    .await;
    late.stop().await;
    acker.stop().await;
}
