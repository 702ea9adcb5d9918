//! Shared helpers for the end-to-end tests: the real binaries as child processes, a real
//! Mosquitto on a free port, a fresh PostgreSQL database per test, polling with deadlines, and
//! the comparison of the aggregator's answers with the plant simulator's ground truth.
//!
//! Binaries: `cargo test -p threadline-e2e` does not build other packages' binaries, so
//! [`binaries`] runs `cargo build --bins -p threadline-gateway -p threadline-aggregator -p
//! threadline-simulators` once per test process (a no-op when they are up to date) and finds
//! them in the target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use threadline_simulators::plant::Truth;

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
    let status = Command::new(&cargo)
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
        .status()
        .with_context(|| format!("running {cargo} build"))?;
    if !status.success() {
        bail!("cargo build of the binaries failed: {status}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join("debug");
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

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A child process with its output in a log file; SIGKILLed when dropped.
pub struct Proc {
    pub name: String,
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program args…` with stdout and stderr appended to `dir/name.log`.
    pub fn start(name: &str, dir: &Path, program: &Path, args: &[&str]) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (a clean stop), then waits up to `timeout` before SIGKILL. Returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when something accepts TCP connections at `addr`.
pub async fn tcp_open(addr: &str) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// A Mosquitto broker on a free loopback port, without persistence.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Mosquitto {
    pub const BIN: &'static str = "/usr/sbin/mosquitto";

    /// Starts it and waits until it accepts connections; `None` (with a loud message, or a panic
    /// under CI=true) when Mosquitto is not installed.
    pub async fn start(dir: &Path) -> Result<Option<Mosquitto>> {
        if !Path::new(Self::BIN).exists() {
            skip_or_fail(&format!(
                "{} not found: install mosquitto to run the end-to-end tests",
                Self::BIN
            ));
            return Ok(None);
        }
        let mut m = Mosquitto {
            port: free_port(),
            dir: dir.to_path_buf(),
            proc: None,
        };
        m.spawn().await?;
        Ok(Some(m))
    }

    async fn spawn(&mut self) -> Result<()> {
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n",
                self.port
            ),
        )?;
        let conf_s = conf.to_string_lossy().into_owned();
        self.proc = Some(Proc::start(
            "mosquitto",
            &self.dir,
            Path::new(Self::BIN),
            &["-c", &conf_s],
        )?);
        let addr = self.addr();
        wait_for("mosquitto to listen", Duration::from_secs(10), || {
            let addr = addr.clone();
            async move { tcp_open(&addr).await.then_some(()) }
        })
        .await
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the broker (everything it held is gone: no persistence) and starts it again on the
    /// same port.
    pub async fn restart(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        self.spawn().await
    }
}

/// Under `CI=true` a missing dependency fails the test; elsewhere the test is skipped loudly.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("CI=true and {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// A fresh PostgreSQL database, dropped at the end of the test (best effort).
pub struct TestDb {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    /// Creates `threadline_e2e_<uuid>` on the server of `THREADLINE_TEST_DATABASE_URL`
    /// (default `postgres://postgres@127.0.0.1:5432/postgres`); `None` when unreachable.
    pub async fn create() -> Option<TestDb> {
        let admin_url = std::env::var("THREADLINE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::postgres::PgPool::connect(&admin_url),
        )
        .await;
        let pool = match conn {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                skip_or_fail(&format!(
                    "PostgreSQL at {admin_url} is unreachable ({e}); set THREADLINE_TEST_DATABASE_URL to a server where the user may CREATE DATABASE"
                ));
                return None;
            }
            Err(_) => {
                skip_or_fail(&format!("PostgreSQL at {admin_url} did not answer in 5 s"));
                return None;
            }
        };
        let name = format!("threadline_e2e_{}", uuid::Uuid::new_v4().simple());
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
        {
            skip_or_fail(&format!("cannot create a test database: {e}"));
            return None;
        }
        pool.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(admin_url.clone());
        Some(TestDb {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        })
    }

    /// Drops the database.
    pub async fn drop_db(self) {
        if let Ok(pool) = sqlx::postgres::PgPool::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
            pool.close().await;
        }
    }

    /// Rows of `sql` (a `SELECT count(*)`), for duplicate checks.
    pub async fn count(&self, sql: &str) -> Result<i64> {
        let pool = sqlx::postgres::PgPool::connect(&self.url).await?;
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        Ok(n)
    }
}

/// A small JSON client of the aggregator's API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(addr: &str) -> Api {
        Api {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// GET → (status, JSON body or Null).
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let r = self.http.get(format!("{}{path}", self.base)).send().await?;
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// POST JSON → status.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Waits until `/healthz` answers 200.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        wait_for("aggregator /healthz = 200", timeout, || async {
            matches!(self.get("/healthz").await, Ok((200, _))).then_some(())
        })
        .await
    }
}

/// Reads the truth file the plant simulator wrote.
pub fn read_truth(path: &Path) -> Result<Truth> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Posts the ERP / WMS master data of the truth (lots with suppliers, work orders with parts,
/// shipments with customers), as an ERP would.
pub async fn post_master_data(api: &Api, truth: &Truth) -> Result<()> {
    for l in truth.lots.values() {
        let (st, body) = api
            .post(
                "/api/v1/lots",
                &serde_json::json!({"lot": l.lot, "part": l.part, "supplier": l.supplier,
                    "supplier_batch": l.supplier_batch, "qty": l.qty}),
            )
            .await?;
        if !(200..300).contains(&st) {
            bail!("POST /api/v1/lots {}: {st} {body}", l.lot);
        }
    }
    for w in truth.work_orders.values() {
        let (st, body) = api
            .post(
                "/api/v1/work-orders",
                &serde_json::json!({"id": w.id, "part": w.part, "line": w.line}),
            )
            .await?;
        if !(200..300).contains(&st) {
            bail!("POST /api/v1/work-orders {}: {st} {body}", w.id);
        }
    }
    for s in truth.shipments.values() {
        let (st, body) = api
            .post(
                "/api/v1/shipments",
                &serde_json::json!({"id": s.id, "customer": s.customer}),
            )
            .await?;
        if !(200..300).contains(&st) {
            bail!("POST /api/v1/shipments {}: {st} {body}", s.id);
        }
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// Differences between the API's unit report and the truth of one unit (empty = identical).
pub fn diff_unit_report(truth: &Truth, serial: &str, report: &Value) -> Vec<String> {
    let mut d = Vec::new();
    let Some(u) = truth.units.get(serial) else {
        return vec![format!("{serial}: not in the truth")];
    };
    for (field, want) in [
        ("serial", &u.serial),
        ("part", &u.part),
        ("work_order", &u.work_order),
        ("line", &u.line),
    ] {
        let got = s(&report[field]);
        if &got != want {
            d.push(format!("{serial}: {field} = {got:?}, truth {want:?}"));
        }
    }
    let got: BTreeSet<(String, String, String, String)> = report["materials"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        s(&m["lot"]),
                        s(&m["part"]),
                        s(&m["supplier"]),
                        s(&m["station"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let want: BTreeSet<(String, String, String, String)> = u
        .materials
        .iter()
        .map(|m| {
            (
                m.lot.clone(),
                m.part.clone(),
                m.supplier.clone(),
                m.station.clone(),
            )
        })
        .collect();
    if got != want {
        d.push(format!("{serial}: materials {got:?}, truth {want:?}"));
    }
    let got: BTreeSet<(String, String)> = report["components"]
        .as_array()
        .map(|a| a.iter().map(|c| (s(&c["serial"]), s(&c["part"]))).collect())
        .unwrap_or_default();
    let want: BTreeSet<(String, String)> = u
        .components
        .iter()
        .map(|c| (c.serial.clone(), c.part.clone()))
        .collect();
    if got != want {
        d.push(format!("{serial}: components {got:?}, truth {want:?}"));
    }
    // Operations in the order they happened.
    let ops: Vec<&Value> = report["operations"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if ops.len() != u.operations.len() {
        d.push(format!(
            "{serial}: {} operations, truth {}: {:?}",
            ops.len(),
            u.operations.len(),
            ops.iter().map(|o| s(&o["station"])).collect::<Vec<_>>()
        ));
    } else {
        for (i, (got, want)) in ops.iter().zip(&u.operations).enumerate() {
            for (field, w) in [
                ("station", want.station.as_str()),
                ("operation", want.operation.as_str()),
                ("equipment", want.equipment.as_str()),
                ("operator", want.operator.as_str()),
                ("recipe", want.recipe.as_str()),
                ("result", want.result.as_str()),
            ] {
                if s(&got[field]) != w {
                    d.push(format!(
                        "{serial}: operation {i} {field} = {:?}, truth {w:?}",
                        s(&got[field])
                    ));
                }
            }
            let defect = s(&got["defect_code"]);
            let want_defect = want.defect_code.clone().unwrap_or_default();
            // A PLC reports "no defect" as 0.
            if defect != want_defect && !(want_defect.is_empty() && defect == "0") {
                d.push(format!(
                    "{serial}: operation {i} defect_code = {defect:?}, truth {want_defect:?}"
                ));
            }
            let params: BTreeMap<String, f64> = got["parameters"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| Some((s(&p["name"]), p["value"].as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            for p in &want.parameters {
                match params.get(&p.name) {
                    Some(v) if close(*v, p.value) => {}
                    other => d.push(format!(
                        "{serial}: operation {i} parameter {} = {other:?}, truth {}",
                        p.name, p.value
                    )),
                }
            }
        }
    }
    let got: BTreeSet<(String, String)> = report["containers"]
        .as_array()
        .map(|a| a.iter().map(|c| (s(&c["id"]), s(&c["level"]))).collect())
        .unwrap_or_default();
    let mut want = BTreeSet::new();
    if u.part != threadline_simulators::plant::model::PART_SUB {
        if let Some(c) = &u.case {
            want.insert((c.clone(), "case".to_owned()));
        }
        if let Some(p) = &u.pallet {
            want.insert((p.clone(), "pallet".to_owned()));
        }
        if got != want {
            d.push(format!("{serial}: containers {got:?}, truth {want:?}"));
        }
        let ship = (
            s(&report["shipment"]["id"]),
            s(&report["shipment"]["customer"]),
        );
        let want_ship = (
            u.shipment.clone().unwrap_or_default(),
            u.customer.clone().unwrap_or_default(),
        );
        if ship != want_ship {
            d.push(format!("{serial}: shipment {ship:?}, truth {want_ship:?}"));
        }
    }
    d
}

/// The unit, lot and container nodes (kind, id) of a trace answer.
pub fn trace_nodes(trace: &Value) -> BTreeSet<(String, String)> {
    trace["nodes"]
        .as_array()
        .map(|a| a.iter().map(|n| (s(&n["kind"]), s(&n["id"]))).collect())
        .unwrap_or_default()
}

/// What a backward trace of `serial` must reach: the unit, its components (every level) and
/// every lot they consumed.
pub fn expected_backward(truth: &Truth, serial: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![serial.to_owned()];
    while let Some(u) = stack.pop() {
        if let Some(t) = truth.units.get(&u) {
            for m in &t.materials {
                out.insert(("lot".to_owned(), m.lot.clone()));
            }
            for c in &t.components {
                stack.push(c.serial.clone());
            }
        }
        out.insert(("unit".to_owned(), u));
    }
    out
}

/// What a backward trace of a shipment must reach: its pallets and cases, their units with
/// everything those consumed.
pub fn expected_shipment_backward(truth: &Truth, shipment: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    out.insert(("shipment".to_owned(), shipment.to_owned()));
    if let Some(sh) = truth.shipments.get(shipment) {
        for p in &sh.pallets {
            out.insert(("container".to_owned(), p.clone()));
            if let Some(pc) = truth.containers.get(p) {
                for c in &pc.children {
                    out.insert(("container".to_owned(), c.clone()));
                }
            }
        }
        for u in &sh.units {
            out.extend(expected_backward(truth, u));
        }
    }
    out
}

/// Differences between a recall answer and the truth of one lot.
pub fn diff_recall(truth: &Truth, lot: &str, recall: &Value) -> Vec<String> {
    let mut d = Vec::new();
    let Some(l) = truth.lots.get(lot) else {
        return vec![format!("{lot}: not in the truth")];
    };
    let list = |v: &Value| -> Vec<String> {
        let mut x: Vec<String> = v
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default();
        x.sort();
        x
    };
    let units = list(&recall["units"]);
    if units != l.all_units {
        d.push(format!(
            "{lot}: recall units {units:?}, truth {:?}",
            l.all_units
        ));
    }
    let containers = list(&recall["containers"]);
    if containers != l.containers {
        d.push(format!(
            "{lot}: recall containers {containers:?}, truth {:?}",
            l.containers
        ));
    }
    let mut shipments: Vec<String> = recall["shipments"]
        .as_array()
        .map(|a| a.iter().map(|x| s(&x["id"])).collect())
        .unwrap_or_default();
    shipments.sort();
    if shipments != l.shipments {
        d.push(format!(
            "{lot}: recall shipments {shipments:?}, truth {:?}",
            l.shipments
        ));
    }
    let customers = list(&recall["customers"]);
    if customers != l.customers {
        d.push(format!(
            "{lot}: recall customers {customers:?}, truth {:?}",
            l.customers
        ));
    }
    d
}

/// Checks every unit, lot and shipment of the truth against the API; returns every difference.
pub async fn verify_all(api: &Api, truth: &Truth) -> Result<Vec<String>> {
    let mut diffs = Vec::new();
    for serial in truth.units.keys() {
        let (st, report) = api.get(&format!("/api/v1/units/{serial}")).await?;
        if st != 200 {
            diffs.push(format!("GET /api/v1/units/{serial}: {st} {report}"));
            continue;
        }
        diffs.extend(diff_unit_report(truth, serial, &report));
        let (st, trace) = api
            .get(&format!("/api/v1/trace/unit/{serial}?direction=backward"))
            .await?;
        if st != 200 {
            diffs.push(format!("GET /api/v1/trace/unit/{serial}: {st} {trace}"));
            continue;
        }
        let got: BTreeSet<_> = trace_nodes(&trace)
            .into_iter()
            .filter(|(k, _)| k == "unit" || k == "lot")
            .collect();
        let want = expected_backward(truth, serial);
        if got != want {
            diffs.push(format!("{serial}: backward trace {got:?}, truth {want:?}"));
        }
    }
    for lot in truth.lots.keys() {
        let (st, recall) = api.get(&format!("/api/v1/lots/{lot}/recall")).await?;
        if st != 200 {
            diffs.push(format!("GET /api/v1/lots/{lot}/recall: {st} {recall}"));
            continue;
        }
        diffs.extend(diff_recall(truth, lot, &recall));
    }
    for sh in truth.shipments.keys() {
        let (st, trace) = api
            .get(&format!("/api/v1/trace/shipment/{sh}?direction=backward"))
            .await?;
        if st != 200 {
            diffs.push(format!("GET /api/v1/trace/shipment/{sh}: {st} {trace}"));
            continue;
        }
        let got: BTreeSet<_> = trace_nodes(&trace)
            .into_iter()
            .filter(|(k, _)| k != "supplier")
            .collect();
        let want = expected_shipment_backward(truth, sh);
        if got != want {
            let missing: Vec<_> = want.difference(&got).collect();
            let extra: Vec<_> = got.difference(&want).collect();
            diffs.push(format!(
                "{sh}: shipment backward trace missing {missing:?}, extra {extra:?}"
            ));
        }
    }
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_simulators::plant::{Plant, PlantParams};

    #[test]
    fn expectations_follow_the_truth() {
        let mut p = Plant::new(PlantParams::default());
        p.plan_batch(10);
        let t = p.truth();
        let sn = t.finished_units().next().unwrap();
        let want = expected_backward(t, &sn.serial);
        // The unit, its sub-assembly, a screw, a bearing and a housing lot.
        assert_eq!(want.len(), 5, "{want:?}");
        let sh = t.shipments.keys().next().unwrap();
        let w = expected_shipment_backward(t, sh);
        assert!(w.contains(&("unit".to_owned(), sn.serial.clone())));
        // A report built from the truth itself has no differences.
        let report = serde_json::json!({
            "serial": sn.serial, "part": sn.part, "work_order": sn.work_order, "line": sn.line,
            "materials": sn.materials.iter().map(|m| serde_json::json!({"lot": m.lot, "part": m.part, "supplier": m.supplier, "station": m.station})).collect::<Vec<_>>(),
            "components": sn.components.iter().map(|c| serde_json::json!({"serial": c.serial, "part": c.part})).collect::<Vec<_>>(),
            "operations": sn.operations.iter().map(|o| serde_json::json!({"station": o.station, "operation": o.operation, "equipment": o.equipment, "operator": o.operator, "recipe": o.recipe, "result": o.result, "defect_code": o.defect_code,
                "parameters": o.parameters.iter().map(|p| serde_json::json!({"name": p.name, "value": p.value})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            "containers": [{"id": sn.case, "level": "case"}, {"id": sn.pallet, "level": "pallet"}],
            "shipment": {"id": sn.shipment, "customer": sn.customer},
        });
        assert_eq!(
            diff_unit_report(t, &sn.serial, &report),
            Vec::<String>::new()
        );
        let mut broken = report.clone();
        broken["operations"][0]["operator"] = Value::String("OP9999".into());
        assert_eq!(diff_unit_report(t, &sn.serial, &broken).len(), 1);
    }
}

/// A TCP proxy in the test process between the aggregator and PostgreSQL, so that a test can
/// take the database away (every connection cut, new ones refused) and give it back — a real
/// outage as the aggregator sees it, without stopping the machine's shared PostgreSQL server.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Bumped on every cut; a connection task ends when it sees a newer generation.
    generation: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub async fn start(target: String) -> Result<TcpProxy> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = std::sync::Arc::new(tx);
        let accept = {
            let (up, generation) = (up.clone(), generation.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the database is "down"
                    }
                    let target = target.clone();
                    let mut cut = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Ok(TcpProxy {
            addr,
            up,
            generation,
            accept,
        })
    }

    /// `url` with its host:port replaced by the proxy's.
    pub fn route(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
        let (auth, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = auth
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}{}/{path}", self.addr)
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL (port 5432 when absent).
pub fn url_authority(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let auth = rest.split('/').next().unwrap_or(rest);
    let host = auth.rsplit_once('@').map(|(_, h)| h).unwrap_or(auth);
    if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// A whole plant under test: Mosquitto, a fresh PostgreSQL database, `threadline-aggregator run`,
/// `threadline-sim` (free ports, holding until told) and one `threadline-gateway run` per line,
/// each a separate process with its log in the test's temporary directory.
pub struct PlantEnv {
    pub dir: tempfile::TempDir,
    pub bins: Bins,
    pub db: TestDb,
    /// The aggregator reaches PostgreSQL through this proxy (to simulate a database outage).
    pub db_proxy: TcpProxy,
    pub broker: Mosquitto,
    pub api: Api,
    pub http_addr: String,
    pub aggregator: Proc,
    pub sim: Proc,
    /// (gateway id, config path, process)
    pub gateways: Vec<(String, PathBuf, Proc)>,
    pub truth_path: PathBuf,
    hold_file: PathBuf,
}

/// How the plant of a test runs.
#[derive(Debug, Clone)]
pub struct PlantRun {
    pub units: usize,
    pub seed: u64,
    pub cycle_ms: u64,
    pub settle_ms: u64,
}

impl Default for PlantRun {
    fn default() -> Self {
        PlantRun {
            units: 20,
            seed: 7,
            cycle_ms: 40,
            settle_ms: 150,
        }
    }
}

impl PlantEnv {
    /// Starts everything (the plant holds until [`PlantEnv::go`]); `None` when PostgreSQL or
    /// Mosquitto is missing (skipped loudly, or a panic under CI=true).
    pub async fn start(run: &PlantRun) -> Result<Option<PlantEnv>> {
        let bins = binaries()?;
        let dir = tempfile::tempdir()?;
        let Some(db) = TestDb::create().await else {
            return Ok(None);
        };
        let Some(broker) = Mosquitto::start(dir.path()).await? else {
            db.drop_db().await;
            return Ok(None);
        };
        let db_proxy = TcpProxy::start(url_authority(&db.url)).await?;
        let http_addr = format!("127.0.0.1:{}", free_port());
        let agg_cfg = dir.path().join("aggregator.toml");
        std::fs::write(
            &agg_cfg,
            format!(
                "[aggregator]\nid = \"agg-e2e\"\nbatch_max_wait_ms = 20\n[mqtt]\nurl = \"{}\"\n[database]\nurl = \"{}\"\n[http]\nlisten = \"{http_addr}\"\n",
                broker.url(),
                db_proxy.route(&db.url)
            ),
        )?;
        let aggregator = start_aggregator(&bins, dir.path(), &agg_cfg)?;
        let api = Api::new(&http_addr);
        api.wait_healthy(Duration::from_secs(30))
            .await
            .with_context(|| format!("aggregator log:\n{}", aggregator.output()))?;

        let plant_toml = workspace_root().join("config/demo/plant.toml");
        let ready = dir.path().join("ready.json");
        let hold_file = dir.path().join("go");
        let truth_path = dir.path().join("truth.json");
        let args: Vec<String> = vec![
            "--config".into(),
            plant_toml.to_string_lossy().into_owned(),
            "--any-port".into(),
            "--ready-file".into(),
            ready.to_string_lossy().into_owned(),
            "--hold-file".into(),
            hold_file.to_string_lossy().into_owned(),
            "--truth".into(),
            truth_path.to_string_lossy().into_owned(),
            "--units".into(),
            run.units.to_string(),
            "--seed".into(),
            run.seed.to_string(),
            "--cycle-ms".into(),
            run.cycle_ms.to_string(),
            "--settle-ms".into(),
            run.settle_ms.to_string(),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let sim = Proc::start("sim", dir.path(), &bins.sim, &argv)?;
        let endpoints: threadline_simulators::plant::Endpoints =
            wait_for("threadline-sim ready file", Duration::from_secs(30), || {
                let ready = ready.clone();
                async move {
                    let b = std::fs::read(&ready).ok()?;
                    serde_json::from_slice(&b).ok()
                }
            })
            .await
            .with_context(|| format!("sim log:\n{}", sim.output()))?;

        let mut gateways = Vec::new();
        for line in ["line-1", "line-2"] {
            let text =
                std::fs::read_to_string(workspace_root().join(format!("config/demo/{line}.toml")))?;
            let id = format!("gw-{line}");
            let out = threadline_simulators::plant::rewrite_gateway_config(
                &text,
                &endpoints,
                &threadline_simulators::plant::Overrides {
                    mqtt_url: Some(broker.url()),
                    data_dir: Some(dir.path().join(&id).to_string_lossy().into_owned()),
                },
            )?;
            let path = dir.path().join(format!("{id}.toml"));
            std::fs::write(&path, out)?;
            let p = start_gateway(&bins, dir.path(), &id, &path)?;
            gateways.push((id, path, p));
        }
        let env = PlantEnv {
            dir,
            bins,
            db,
            db_proxy,
            broker,
            api,
            http_addr,
            aggregator,
            sim,
            gateways,
            truth_path,
            hold_file,
        };
        env.wait_gateways_online().await?;
        Ok(Some(env))
    }

    /// Waits until the aggregator lists every gateway as online.
    pub async fn wait_gateways_online(&self) -> Result<()> {
        let n = self.gateways.len();
        wait_for("every gateway online", Duration::from_secs(30), || async {
            let (_, v) = self.api.get("/api/v1/gateways").await.ok()?;
            let list = v.as_array().or_else(|| v["gateways"].as_array())?;
            let online = list
                .iter()
                .filter(|g| g["state"] == "online" || g["online"] == true)
                .count();
            (online >= n).then_some(())
        })
        .await
        .with_context(|| self.logs())
    }

    /// Lets the plant start.
    pub fn go(&self) -> Result<()> {
        std::fs::write(&self.hold_file, b"go")?;
        Ok(())
    }

    /// Waits until the simulator printed `line` (`plant: done`, `plant: paused`).
    pub async fn wait_sim_says(&self, line: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("threadline-sim to print {line:?}"),
            timeout,
            || async { self.sim.output().contains(line).then_some(()) },
        )
        .await
        .with_context(|| self.logs())
    }

    /// Sends a signal to the simulator (`USR1` pause, `USR2` resume).
    pub fn signal_sim(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.sim.child.id().to_string()])
            .status();
    }

    /// SIGKILLs gateway `i` and starts it again with the same config and outbox.
    pub fn kill_and_restart_gateway(&mut self, i: usize) -> Result<()> {
        let (id, path, p) = &mut self.gateways[i];
        p.kill();
        *p = start_gateway(&self.bins, self.dir.path(), id, path)?;
        Ok(())
    }

    /// SIGKILLs the aggregator and starts it again.
    pub async fn kill_and_restart_aggregator(&mut self) -> Result<()> {
        self.aggregator.kill();
        let cfg = self.dir.path().join("aggregator.toml");
        self.aggregator = start_aggregator(&self.bins, self.dir.path(), &cfg)?;
        self.api.wait_healthy(Duration::from_secs(30)).await
    }

    /// Polls [`verify_all`] until the aggregator agrees with the truth (ingest is asynchronous)
    /// or `timeout`; returns the differences that remain.
    pub async fn converge(&self, truth: &Truth, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let diffs = verify_all(&self.api, truth).await?;
            if diffs.is_empty() || Instant::now() > deadline {
                return Ok(diffs);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (name, out) in [
            ("aggregator", self.aggregator.output()),
            ("sim", self.sim.output()),
        ]
        .into_iter()
        .chain(
            self.gateways
                .iter()
                .map(|(id, _, p)| (id.as_str(), p.output())),
        ) {
            let tail: String = out
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            s.push_str(&format!("----- {name} (last 40 lines)\n{tail}\n"));
        }
        s
    }

    /// Stops every process and drops the database.
    pub async fn finish(mut self) {
        for (_, _, p) in &mut self.gateways {
            p.kill();
        }
        self.sim.kill();
        self.aggregator.kill();
        let db = TestDb {
            url: self.db.url.clone(),
            admin_url: self.db.admin_url.clone(),
            name: self.db.name.clone(),
        };
        db.drop_db().await;
    }
}

fn start_aggregator(bins: &Bins, dir: &Path, cfg: &Path) -> Result<Proc> {
    let c = cfg.to_string_lossy().into_owned();
    Proc::start(
        "aggregator",
        dir,
        &bins.aggregator,
        &["run", "--config", &c],
    )
}

fn start_gateway(bins: &Bins, dir: &Path, id: &str, cfg: &Path) -> Result<Proc> {
    let c = cfg.to_string_lossy().into_owned();
    Proc::start(id, dir, &bins.gateway, &["run", "--config", &c])
}

/// Duplicate checks on the aggregator's database: (gateway, epoch, seq) appear once in the
/// event log, and no genealogy edge or operation is stored twice.
pub async fn duplicates(db: &TestDb) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (what, sql) in [
        (
            "events with the same (gateway, epoch, seq)",
            "SELECT count(*) FROM (SELECT gateway, epoch, seq FROM events GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
        ),
        (
            "edges stored twice",
            "SELECT count(*) FROM (SELECT parent_id, child_id, relation FROM edges GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
        ),
        (
            "operations stored twice",
            "SELECT count(*) FROM (SELECT unit_id, station, completed_at FROM operations GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
        ),
    ] {
        let n = db.count(sql).await?;
        if n != 0 {
            out.push(format!("{n} {what}"));
        }
    }
    Ok(out)
}

/// The `scan_rejected` events of the event log (raw codes), through `GET /api/v1/events`.
pub async fn rejected_scans(api: &Api) -> Result<BTreeSet<String>> {
    let mut raws = BTreeSet::new();
    let mut after = 0i64;
    loop {
        let (st, v) = api
            .get(&format!("/api/v1/events?after_id={after}&limit=1000"))
            .await?;
        if st != 200 {
            bail!("GET /api/v1/events: {st} {v}");
        }
        for e in v["events"].as_array().into_iter().flatten() {
            if s(&e["type"]) == "scan_rejected" {
                raws.insert(s(&e["record"]["raw"]));
            }
        }
        match v["next_after"].as_i64() {
            Some(n) if n > after => after = n,
            _ => break,
        }
    }
    Ok(raws)
}

/// `GET /api/v1/audit/verify` says every hash chain is intact.
pub async fn audit_ok(api: &Api) -> Result<()> {
    let (st, v) = api.get("/api/v1/audit/verify").await?;
    if st != 200 || v["ok"] != Value::Bool(true) {
        bail!("audit verify: {st} {v}");
    }
    Ok(())
}
