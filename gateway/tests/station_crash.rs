//! A station's context and the events it produced commit together: the real
//! `threadline-gateway run` binary is killed (a `THREADLINE_FAILPOINT` abort, as a SIGKILL at
//! that instant) just before, inside and just after the one outbox transaction of a station
//! step, for every station kind, then restarted. After the kill either both the new context
//! and its events are in the outbox or neither is; after the restart a tag edge fires again
//! (never lost) or does not fire twice (never duplicated), and the context always agrees with
//! the events.
//!
//! The outbox is inspected read-only while the gateway runs (WAL) and after it died; no broker
//! is reachable, so every record stays in the outbox.

#![allow(clippy::unwrap_used)] // helpers of tests panic on purpose

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection as _, SqliteConnection};
use threadline_gateway::failpoint;
use threadline_simulators::modbus::{SimBank, TcpSim, WordOrder};
use threadline_simulators::scanner::SimScanner;

const BIN: &str = env!("CARGO_BIN_EXE_threadline-gateway");
const DEADLINE: Duration = Duration::from_secs(15);
const SSCC: &str = "006141410000000104";
const POINTS: [&str; 3] = [
    failpoint::BEFORE_STATION_COMMIT,
    failpoint::INSIDE_STATION_COMMIT,
    failpoint::AFTER_STATION_COMMIT,
];

/// What the outbox holds: every record (canonical JSON) and the committed station context.
struct Committed {
    records: Vec<Value>,
    state: Value,
}

impl Committed {
    fn of_type(&self, ty: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["type"] == ty).collect()
    }

    fn station(&self, id: &str) -> &Value {
        &self.state["stations"][id]
    }
}

/// Reads the outbox of `data_dir` without writing to it.
async fn committed(data_dir: &Path) -> Option<Committed> {
    let path = data_dir.join("outbox.db");
    if !path.exists() {
        return None;
    }
    let opts = SqliteConnectOptions::from_str("sqlite:")
        .unwrap()
        .filename(&path)
        .read_only(true);
    let mut conn = SqliteConnection::connect_with(&opts).await.ok()?;
    let rows: Vec<(String,)> = sqlx::query_as("SELECT payload FROM records ORDER BY seq")
        .fetch_all(&mut conn)
        .await
        .ok()?;
    let state: Option<(String,)> = sqlx::query_as("SELECT state FROM station_state")
        .fetch_optional(&mut conn)
        .await
        .ok()?;
    let _ = conn.close().await;
    Some(Committed {
        records: rows
            .iter()
            .map(|(p,)| serde_json::from_str(p).unwrap())
            .collect(),
        state: state.map_or(Value::Null, |(s,)| serde_json::from_str(&s).unwrap()),
    })
}

/// One gateway with one station of the kind under test.
struct Rig {
    dir: tempfile::TempDir,
    config: PathBuf,
    runs: usize,
}

impl Rig {
    fn new(body: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gw.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nid = \"gw-crash\"\nplant = \"p\"\nline = \"l\"\ndata_dir = \"{}\"\n\n\
                 [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\n\
                 [[pattern]]\nkind = \"unit\"\nregex = '^SN\\d{{8}}$'\n\
                 [[pattern]]\nkind = \"lot\"\nregex = '^LOT-(?P<part>P\\d+)-\\d+$'\n\
                 [[pattern]]\nkind = \"container\"\ngs1_ai = \"00\"\n\
                 [[pattern]]\nkind = \"shipment\"\nregex = '^SHP-\\d+$'\n\n{body}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        Rig {
            dir,
            config,
            runs: 0,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("run{run}.log"))
    }

    fn logs(&self) -> String {
        (1..=self.runs)
            .map(|r| {
                format!(
                    "--- run {r} ---\n{}",
                    std::fs::read_to_string(self.log(r)).unwrap_or_default()
                )
            })
            .collect()
    }

    /// Starts the gateway, armed with `failpoint` if given.
    fn spawn(&mut self, failpoint: Option<&str>) -> Child {
        self.runs += 1;
        let log = std::fs::File::create(self.log(self.runs)).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env_remove(failpoint::ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(f) = failpoint {
            cmd.env(failpoint::ENV, f);
        }
        cmd.spawn().unwrap()
    }

    /// Waits until the outbox satisfies `cond`.
    async fn wait_committed(&self, what: &str, mut cond: impl FnMut(&Committed) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(c) = committed(&self.data_dir()).await
                && cond(&c)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Scans a code no pattern knows until its `scan_rejected` is committed: the reader is
    /// open and read (a pty drops what was written while the port was being set up).
    async fn prime(&self, scanner: &mut SimScanner) {
        let code = format!("PING-{}", self.runs);
        let deadline = Instant::now() + DEADLINE;
        loop {
            scanner.scan(&code).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Some(c) = committed(&self.data_dir()).await
                && c.of_type("scan_rejected")
                    .iter()
                    .any(|r| r["raw"] == code.as_str())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the scanner never got through\n{}",
                self.logs()
            );
        }
    }

    /// Waits for the abort at the armed failpoint.
    async fn wait_aborted(&self, gw: &mut Child, point: &str) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = gw.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the failpoint {point} was not reached\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            status.signal(),
            Some(6),
            "expected the failpoint's abort, got {status:?}\n{}",
            self.logs()
        );
    }

    /// SIGTERM, then a clean exit: the pipeline commits what it already took.
    async fn stop(&self, mut gw: Child) -> Committed {
        let pid = gw.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = gw.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "{status:?}\n{}", self.logs());
        committed(&self.data_dir()).await.unwrap()
    }
}

fn ids(records: &[&Value], field: &str) -> Vec<String> {
    records
        .iter()
        .map(|r| match &r[field] {
            Value::String(s) => s.clone(),
            v => v["id"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// process / inspect: a tag edge (done word 0 → 1) completes the unit the PLC's serial tag
/// names.
async fn edge_station(kind: &str, extra: &str, event: &str) {
    for point in POINTS {
        let bank = SimBank::new();
        let sim = TcpSim::start("127.0.0.1:0".parse().unwrap(), bank.clone())
            .await
            .unwrap();
        // One read in address order (max_gap): the measurement and the serial come before the
        // done word, as a PLC handshake has it, so that the first poll after a restart sees
        // them before the edge it fires again.
        bank.set_f32(0, 10.0, WordOrder::ABCD);
        bank.set_string(10, "SN00000001", 6, WordOrder::ABCD);
        bank.set_u16(30, 0, WordOrder::ABCD);
        let mut rig = Rig::new(&format!(
            "[[device]]\nid = \"plc\"\nprotocol = \"modbus-tcp\"\naddress = \"{}\"\nmax_gap = 32\n\
             [[device.tag]]\nname = \"st.dia\"\narea = \"holding\"\naddress = 0\ntype = \"f32\"\n\
             scan_ms = 20\n\
             [[device.tag]]\nname = \"st.serial\"\narea = \"holding\"\naddress = 10\n\
             type = \"string\"\nlength = 6\nscan_ms = 20\n\
             [[device.tag]]\nname = \"st.done\"\narea = \"holding\"\naddress = 30\nscan_ms = 20\n\n\
             [[station]]\nid = \"ST\"\nkind = \"{kind}\"\nunit_tag = \"st.serial\"\n\
             complete_on = {{ tag = \"st.done\", edge = \"rising\" }}\n{extra}",
            sim.local_addr()
        ));
        let mut gw = rig.spawn(Some(&format!("{point}@{event}")));
        rig.wait_committed("the unit is current and the done bit low", |c| {
            c.station("ST")["unit"]["id"] == "SN00000001"
                && c.state["trigger_values"]["st.done"] == 0
        })
        .await;
        bank.set_u16(30, 1, WordOrder::ABCD);
        rig.wait_aborted(&mut gw, point).await;

        let c = committed(&rig.data_dir()).await.unwrap();
        let fired = c.of_type(event).len();
        if point == failpoint::AFTER_STATION_COMMIT {
            assert_eq!(fired, 1, "{point}: committed, so the event is there");
            assert_eq!(c.state["trigger_values"]["st.done"], 1, "{point}");
            assert!(c.station("ST")["unit"].is_null(), "{point}: {}", c.state);
        } else {
            assert_eq!(fired, 0, "{point}: nothing was committed");
            assert_eq!(
                c.state["trigger_values"]["st.done"], 0,
                "{point}: the edge is not committed either: {}",
                c.state
            );
            assert_eq!(c.station("ST")["unit"]["id"], "SN00000001", "{point}");
        }
        let seen = c.records.len();

        // Restart: the PLC still shows the done bit; a reading of it from the new run shows
        // that the engine has seen it.
        let gw = rig.spawn(None);
        rig.wait_committed("the done bit read again", |c| {
            c.records[seen..]
                .iter()
                .any(|r| r["type"] == "reading" && r["tag"] == "st.done" && r["value"] == 1)
        })
        .await;
        let c = rig.stop(gw).await;
        let ops = c.of_type(event);
        assert_eq!(
            ops.len(),
            1,
            "{point}: the edge fires exactly once over the crash: {ops:#?}\n{}",
            rig.logs()
        );
        assert_eq!(ops[0]["unit"], "SN00000001");
        if event == "quality_check" {
            assert_eq!(ops[0]["value"], 10.0);
            assert_eq!(ops[0]["result"], "pass");
        }
        assert!(c.station("ST")["unit"].is_null(), "{point}: {}", c.state);
        assert_eq!(c.station("ST")["completed"][0], "SN00000001", "{point}");
        drop(sim);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_station_edge_is_neither_lost_nor_doubled_by_a_crash() {
    edge_station("process", "", "operation_completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_station_edge_is_neither_lost_nor_doubled_by_a_crash() {
    edge_station(
        "inspect",
        "characteristics = [{ tag = \"st.dia\", name = \"dia\", lsl = 9.0, usl = 11.0 }]\n",
        "quality_check",
    )
    .await;
}

/// A scan-driven station: `setup` scans are committed first, then `crash` is scanned with the
/// failpoint armed for `event`, then after the restart `next` is scanned. `check` compares the
/// context with the events after the kill and at the end (`true` = the crash scan's event
/// exists).
async fn scan_station(
    station: &str,
    setup: &[&str],
    crash: &str,
    next: &str,
    event: &str,
    check: impl Fn(&Committed, bool),
) {
    for point in POINTS {
        let (mut scanner, port) = SimScanner::new().unwrap();
        let mut rig = Rig::new(&format!(
            "{station}\n[[scanner]]\nid = \"sc\"\nport = \"{}\"\nstation = \"X\"\ndedup_ms = 0\n",
            port.display()
        ));
        let mut gw = rig.spawn(Some(&format!("{point}@{event}")));
        rig.prime(&mut scanner).await;
        for code in setup {
            scanner.scan(code).unwrap();
        }
        if !setup.is_empty() {
            // The setup's context is committed (the first state row).
            rig.wait_committed("the setup scans", |c| !c.state.is_null())
                .await;
        }
        scanner.scan(crash).unwrap();
        rig.wait_aborted(&mut gw, point).await;
        let c = committed(&rig.data_dir()).await.unwrap();
        let after = point == failpoint::AFTER_STATION_COMMIT;
        assert_eq!(
            c.of_type(event).len(),
            usize::from(after),
            "{point}: {:#?}",
            c.records
        );
        check(&c, after);

        let gw = rig.spawn(None);
        rig.prime(&mut scanner).await;
        scanner.scan(next).unwrap();
        let want = usize::from(after) + 1;
        rig.wait_committed("the scan after the restart", |c| {
            c.of_type(event).len() >= want
        })
        .await;
        let c = rig.stop(gw).await;
        assert_eq!(c.of_type(event).len(), want, "{point}: {:#?}", c.records);
        check(&c, after);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assembly_station_context_and_events_commit_together() {
    scan_station(
        "[[station]]\nid = \"X\"\nkind = \"assembly\"\ncomplete_code = \"DONE\"\n",
        &["SN00000100"],
        "SN00000201",
        "SN00000202",
        "assembled",
        |c, _| {
            // The children bound to the parent are exactly the ones with an `assembled`.
            let bound: Vec<String> = c.station("X")["children"]
                .as_array()
                .unwrap()
                .iter()
                .map(|ch| ch["item"]["id"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(bound, ids(&c.of_type("assembled"), "child"), "{}", c.state);
            assert_eq!(c.station("X")["unit"]["id"], "SN00000100");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_station_context_and_events_commit_together() {
    scan_station(
        "[[station]]\nid = \"X\"\nkind = \"pack\"\nlevel = \"case\"\n",
        &[&format!("(00){SSCC}")],
        "SN00000001",
        "SN00000002",
        "packed",
        |c, _| {
            // The open case counts exactly the units packed into it.
            assert_eq!(c.station("X")["container"]["id"], SSCC, "{}", c.state);
            assert_eq!(
                c.station("X")["container"]["count"],
                c.of_type("packed").len(),
                "{}",
                c.state
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_station_context_and_events_commit_together() {
    scan_station(
        "[[station]]\nid = \"X\"\nkind = \"ship\"\ncustomer = \"ACME\"\n",
        &["SHP-1"],
        &format!("(00){SSCC}"),
        "SN00000001",
        "shipped",
        |c, after| {
            assert_eq!(c.station("X")["shipment"]["id"], "SHP-1", "{}", c.state);
            let shipped: Vec<&Value> = c.of_type("shipped");
            assert!(shipped.iter().all(|s| s["shipment"] == "SHP-1"));
            assert_eq!(
                shipped.iter().any(|s| s["container"] == SSCC),
                after,
                "{shipped:#?}"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_station_events_commit_once() {
    scan_station(
        "[[station]]\nid = \"X\"\nkind = \"receive\"\nsupplier = \"SUP\"\n",
        &[],
        "LOT-P100-000001",
        "LOT-P100-000002",
        "lot_received",
        |c, after| {
            let lots = ids(&c.of_type("lot_received"), "lot");
            assert_eq!(
                lots.contains(&"LOT-P100-000001".to_owned()),
                after,
                "{lots:?}"
            );
        },
    )
    .await;
}
