//! Live reload of the real `threadline-gateway run` binary (`kill -HUP`), against two simulated
//! PLCs: an invalid file is refused with all its problems and nothing changes; `check --against
//! running` shows what a valid file changes; the reload restarts the changed device and the
//! station logic while the untouched device keeps polling without a gap; a broker change
//! restarts the gateway in place (same process, same outbox, no seq gap).
//!
//! No broker is reachable: every record stays in the outbox, which the test reads read-only.

#![allow(clippy::unwrap_used)] // helpers of tests panic on purpose

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection as _, SqliteConnection};
use threadline_simulators::modbus::{SimBank, TcpSim, WordOrder};

const BIN: &str = env!("CARGO_BIN_EXE_threadline-gateway");
const DEADLINE: Duration = Duration::from_secs(20);

/// `(seq, ts_us, payload)` of every record in the outbox of `data_dir`.
async fn records(data_dir: &Path) -> Vec<(i64, i64, Value)> {
    let path = data_dir.join("outbox.db");
    if !path.exists() {
        return Vec::new();
    }
    let opts = SqliteConnectOptions::from_str("sqlite:")
        .unwrap()
        .filename(&path)
        .read_only(true);
    let Ok(mut conn) = SqliteConnection::connect_with(&opts).await else {
        return Vec::new();
    };
    let rows: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT seq, ts_us, payload FROM records ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    let _ = conn.close().await;
    rows.into_iter()
        .map(|(s, t, p)| (s, t, serde_json::from_str(&p).unwrap()))
        .collect()
}

/// The gateway process, killed when dropped: a failing test must not leave it running.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Rig {
    dir: tempfile::TempDir,
    a: String,
    b: String,
}

impl Rig {
    fn config(&self) -> PathBuf {
        self.dir.path().join("gw.toml")
    }
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gw.log")).unwrap_or_default()
    }

    /// The config: PLC `a` (a counter, a serial, a done word) with station ST on it, PLC `b`
    /// (a counter and `b_extra` tags); `mqtt_port` is unreachable either way.
    fn text(&self, b_extra: &str, operation: &str, mqtt_port: u16) -> String {
        format!(
            "[gateway]\nid = \"gw-reload\"\nplant = \"p\"\nline = \"l\"\ndata_dir = \"{data}\"\n\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\n\n\
             [[pattern]]\nkind = \"unit\"\nregex = '^SN\\d{{8}}$'\n\n\
             [[device]]\nid = \"a\"\nprotocol = \"modbus-tcp\"\naddress = \"{a}\"\nmax_gap = 32\n\
             [[device.tag]]\nname = \"a.n\"\narea = \"holding\"\naddress = 0\nscan_ms = 20\n\
             [[device.tag]]\nname = \"a.serial\"\narea = \"holding\"\naddress = 10\n\
             type = \"string\"\nlength = 6\nscan_ms = 20\n\
             [[device.tag]]\nname = \"a.done\"\narea = \"holding\"\naddress = 30\nscan_ms = 20\n\n\
             [[device]]\nid = \"b\"\nprotocol = \"modbus-tcp\"\naddress = \"{b}\"\n\
             [[device.tag]]\nname = \"b.n\"\narea = \"holding\"\naddress = 0\nscan_ms = 50\n\
             {b_extra}\n\
             [[station]]\nid = \"ST\"\noperation = \"{operation}\"\nkind = \"process\"\n\
             unit_tag = \"a.serial\"\ncomplete_on = {{ tag = \"a.done\", edge = \"rising\" }}\n",
            data = self.data_dir().display(),
            a = self.a,
            b = self.b,
        )
    }

    fn write(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
    }

    fn spawn(&self) -> Gateway {
        let log = std::fs::File::create(self.dir.path().join("gw.log")).unwrap();
        Gateway(
            Command::new(BIN)
                .arg("run")
                .arg("--config")
                .arg(self.config())
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    async fn wait_log(&self, what: &str, count: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.log().matches(what).count() < count {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count}× {what:?} in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_records(&self, what: &str, cond: impl Fn(&[(i64, i64, Value)]) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if cond(&records(&self.data_dir()).await) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn check_against_running(&self) -> (bool, String) {
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(self.config())
            .args(["--against", "running"])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

fn kill(pid: u32, signal: &str) {
    assert!(
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn reading(r: &Value, tag: &str) -> bool {
    r["type"] == "reading" && r["tag"] == tag
}

/// The longest time between two readings of `tag` recorded in `[from_us, to_us]`.
fn max_gap_us(recs: &[(i64, i64, Value)], tag: &str, from_us: i64, to_us: i64) -> i64 {
    let ts: Vec<i64> = recs
        .iter()
        .filter(|(_, t, r)| reading(r, tag) && *t >= from_us && *t <= to_us)
        .map(|(_, t, _)| *t)
        .collect();
    ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(i64::MAX)
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hup_applies_a_valid_config_live_refuses_an_invalid_one_and_restarts_in_place_for_the_broker()
 {
    let (bank_a, bank_b) = (SimBank::new(), SimBank::new());
    let sim_a = TcpSim::start("127.0.0.1:0".parse().unwrap(), bank_a.clone())
        .await
        .unwrap();
    let sim_b = TcpSim::start("127.0.0.1:0".parse().unwrap(), bank_b.clone())
        .await
        .unwrap();
    bank_a.set_string(10, "SN00000041", 6, WordOrder::ABCD);
    bank_a.set_u16(30, 0, WordOrder::ABCD);
    bank_b.set_u16(1, 7, WordOrder::ABCD);
    // PLC a counts: every poll of a.n sees a new value, so every poll is a reading.
    let counting = {
        let bank = bank_a.clone();
        tokio::spawn(async move {
            for n in 0u16.. {
                bank.set_u16(0, n, WordOrder::ABCD);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let rig = Rig {
        dir: tempfile::tempdir().unwrap(),
        a: sim_a.local_addr().to_string(),
        b: sim_b.local_addr().to_string(),
    };
    let first = rig.text("", "OP10 press", 1);
    rig.write(&first);
    let mut gw = rig.spawn();
    let pid = gw.0.id();
    rig.wait_log("gateway running", 1).await;
    rig.wait_records("readings of both PLCs", |r| {
        r.iter().any(|(_, _, v)| reading(v, "a.n")) && r.iter().any(|(_, _, v)| reading(v, "b.n"))
    })
    .await;
    let (ok, out) = rig.check_against_running();
    assert!(ok, "{out}");
    assert!(out.contains("  no changes"), "{out}");

    // 1. An invalid file: refused with every problem, the running config stays.
    rig.write(
        &first
            .replace("max_gap = 32", "max_gap = 32\nbogus = 1")
            .replace("kind = \"process\"", "kind = \"proces\""),
    );
    kill(pid, "-HUP");
    rig.wait_log("refused, the running config stays", 1).await;
    let log = rig.log();
    assert!(log.contains("2 problems"), "{log}");
    assert!(log.contains("bogus") && log.contains("proces"), "{log}");
    let running = std::fs::read_to_string(rig.data_dir().join("running.toml")).unwrap();
    assert!(
        running.ends_with(&first),
        "running.toml changed:\n{running}"
    );

    // 2. A valid file: b gets a tag, ST a new operation name; check shows it first.
    let second = rig.text(
        "[[device.tag]]\nname = \"b.x\"\narea = \"holding\"\naddress = 1\nscan_ms = 50\n",
        "OP10 press v2",
        1,
    );
    rig.write(&second);
    let (ok, out) = rig.check_against_running();
    assert!(ok, "{out}");
    for line in [
        &format!("changes against the running config (pid {pid}, applied "),
        "  device b: changed",
        "    tag b.x: added",
        "  station ST: changed",
        "  applied live: restart device b; rebuild the station logic from its committed state",
        "  untouched, polling without a gap: device a",
        &format!("apply with: kill -HUP {pid}   (systemd: systemctl reload threadline-gateway)"),
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let before_us = now_us();
    kill(pid, "-HUP");
    rig.wait_log("config reloaded", 1).await;
    rig.wait_records("b.x = 7 from the restarted device b", |r| {
        r.iter()
            .any(|(_, _, v)| reading(v, "b.x") && v["value"] == 7)
    })
    .await;
    let log = rig.log();
    assert!(
        log.contains("driver stopped for the new config driver=device b"),
        "{log}"
    );
    assert!(
        !log.contains("driver=device a"),
        "device a was touched:\n{log}"
    );
    assert!(
        log.contains("station logic restarted for the new config"),
        "{log}"
    );
    let (ok, out) = rig.check_against_running();
    assert!(ok && out.contains("  no changes"), "{out}");

    // The new station logic: one completion, with the new operation name.
    bank_a.set_string(10, "SN00000042", 6, WordOrder::ABCD);
    rig.wait_records("the new serial read", |r| {
        r.iter()
            .any(|(_, _, v)| reading(v, "a.serial") && v["value"] == "SN00000042")
    })
    .await;
    bank_a.set_u16(30, 1, WordOrder::ABCD);
    rig.wait_records("the operation of SN00000042", |r| {
        r.iter()
            .any(|(_, _, v)| v["type"] == "operation_completed" && v["unit"] == "SN00000042")
    })
    .await;
    // Device a polled on through the live reload: a reading at least every second.
    let after_us = now_us();
    let recs = records(&rig.data_dir()).await;
    let gap = max_gap_us(&recs, "a.n", before_us, after_us);
    assert!(
        gap < 1_000_000,
        "a.n readings stopped for {gap} µs during the live reload\n{}",
        rig.log()
    );

    // 3. Another broker: the whole gateway restarts in place, same process, same outbox.
    let third = second.replace("mqtt://127.0.0.1:1\"", "mqtt://127.0.0.1:2\"");
    rig.write(&third);
    let (ok, out) = rig.check_against_running();
    assert!(
        ok && out.contains("the whole gateway restarts in place"),
        "{out}"
    );
    kill(pid, "-HUP");
    rig.wait_log("gateway running", 2).await;
    assert!(gw.0.try_wait().unwrap().is_none(), "the process ended");
    let seen = records(&rig.data_dir()).await.len();
    rig.wait_records("readings after the restart in place", |r| {
        r.len() > seen + 5
    })
    .await;
    let running = std::fs::read_to_string(rig.data_dir().join("running.toml")).unwrap();
    assert!(running.ends_with(&third), "{running}");

    kill(pid, "-TERM");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = gw.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}\n{}", rig.log());
    counting.abort();

    let recs = records(&rig.data_dir()).await;
    let seqs: Vec<i64> = recs.iter().map(|(s, _, _)| *s).collect();
    let contiguous: Vec<i64> = (seqs[0]..seqs[0] + seqs.len() as i64).collect();
    assert_eq!(seqs, contiguous, "one outbox, no seq gap over reloads");
    let ops: Vec<&Value> = recs
        .iter()
        .map(|(_, _, v)| v)
        .filter(|v| v["type"] == "operation_completed")
        .collect();
    assert_eq!(ops.len(), 1, "{ops:#?}");
    assert_eq!(ops[0]["unit"], "SN00000042");
    assert_eq!(ops[0]["operation"], "OP10 press v2", "{}", ops[0]);
    drop((sim_a, sim_b));
}
