//! Route and hold enforcement at the gateway (issue 16), with the real binaries: Mosquitto,
//! `threadline-aggregator run` on PostgreSQL, `threadline-gateway run` with one pseudo-terminal
//! scanner per station, and the route posted to the aggregator's API.
//!
//! Line: `ST10 assemble` (starts units, not enforcing) → `ST20 test` → `ST30 final` (both
//! `enforce_route = true`), a receiving station for lots; route `FG-1` v1 = ST10, ST20, ST30.
//!
//! 1. online: a unit that skipped ST20 is refused at ST30 naming `missing operation test at
//!    ST20`; a unit that passed ST10 and ST20 is accepted at ST30 and completes there;
//! 2. holds placed on a unit and a lot reach the gateway on the retained holds topic: both are
//!    refused (`on hold: <reason> (<kind> <id>)`, the gateway's own wording, not the
//!    aggregator's `via …`);
//! 3. aggregator and broker down (`when_unreachable = "allow"`): a unit that skipped ST20 on
//!    this line is still refused, from the cached route and the line's own results; a unit that
//!    passed ST10 and ST20 here proceeds;
//! 4. the gateway restarted while both stay down: the cached holds and route still refuse.
//!
//! The materials check and holds through consumed lots
//! (`e2e_lot_of_a_wrong_part_refused_and_a_held_lot_stops_the_units_it_reached_offline`):
//! route `FG-1` with `materials = ["P1"]` at ST20: a lot of part P2 (from its label, or from
//! the aggregator's master data for a label without a part) is refused at ST20 naming the lot,
//! its part and the operation, a P1 lot is loaded and consumed by SN1; a hold on that lot, with
//! the aggregator and the broker down, refuses SN1 at ST30 (`via lot …`) from the cache, and
//! a P2 lot is still refused from the cached route.
//!
//! And without any aggregator, `when_unreachable = "block"` refuses naming the unreachable
//! route service, `"allow"` accepts; each verdict is written to the station's interlock tag
//! (a coil, a holding register) and read back from the Modbus simulator.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection as _, SqliteConnection};
use threadline_e2e::{Api, Mosquitto, Proc, TestDb, binaries, free_port, wait_for};
use threadline_simulators::modbus::{SimBank, TcpSim};
use threadline_simulators::scanner::SimScanner;

const WAIT: Duration = Duration::from_secs(30);
const STATIONS: [&str; 4] = ["RCV", "ST10", "ST20", "ST30"];

/// The device an interlock test writes to.
enum Interlock<'a> {
    /// A Modbus TCP device at `addr`, the tag at address 10 of `area` (coil / holding).
    Modbus { addr: &'a str, area: &'a str },
    /// An OPC UA server at `endpoint`, the tag an Int32 node.
    OpcUa { endpoint: &'a str, node: &'a str },
    /// A Modbus RTU unit 1 on serial `port`, the tag holding register 10 (polled on the same
    /// bus).
    Rtu { port: &'a str },
}

/// The gateway's config: four stations, one pty scanner each.
fn gateway_config(
    data_dir: &Path,
    mqtt_url: &str,
    aggregator: &str,
    policy: &str,
    ports: &[PathBuf],
    interlock: Option<Interlock<'_>>,
) -> String {
    // With an interlock: a device whose tag `st20.ok` ST20 writes.
    let il = "interlock = { tag = \"st20.ok\", ok = 1, nok = 0 }\n";
    let (device, st20_interlock) = match interlock {
        Some(Interlock::Modbus { addr, area }) => (
            format!(
                "[[device]]\nid = \"plc\"\nprotocol = \"modbus-tcp\"\naddress = \"{addr}\"\n\
                 timeout_ms = 500\n  [[device.tag]]\n  name = \"st20.ok\"\n  area = \"{area}\"\n\
                 address = 10\n  writable = true\n\n"
            ),
            il,
        ),
        Some(Interlock::Rtu { port }) => (
            format!(
                "[[device]]\nid = \"rtu-plc\"\nprotocol = \"modbus-rtu\"\nport = \"{port}\"\n\
                 baud = 19200\nunit_id = 1\ntimeout_ms = 300\n  [[device.tag]]\n  name = \"st20.ok\"\n\
                 area = \"holding\"\n  address = 10\n  scan_ms = 100\n  writable = true\n\n"
            ),
            il,
        ),
        Some(Interlock::OpcUa { endpoint, node }) => (
            format!(
                "[[device]]\nid = \"ua-plc\"\nprotocol = \"opcua\"\nendpoint = \"{endpoint}\"\n\
                 timeout_ms = 5000\n  [[device.tag]]\n  name = \"st20.ok\"\n  node_id = \"{node}\"\n\
                 type = \"i32\"\n  writable = true\n\n"
            ),
            il,
        ),
        None => (String::new(), ""),
    };
    let mut s = format!(
        "[gateway]\nid = \"gw-route\"\nplant = \"plant-r\"\nline = \"line-1\"\ndata_dir = \"{}\"\n\n\
         [mqtt]\nurl = \"{mqtt_url}\"\nkeep_alive_s = 5\n\n\
         [route]\naggregator_url = \"http://{aggregator}\"\nlookup_timeout_ms = 500\n\
         when_unreachable = \"{policy}\"\n\n\
         [[pattern]]\nkind = \"unit\"\nregex = '^SN\\d+$'\n\
         [[pattern]]\nkind = \"lot\"\nregex = '^LOT-(?P<part>P\\d+)-\\d+$'\n\
         [[pattern]]\nkind = \"lot\"\nregex = '^BATCH-\\d+$'\n\n\
         [[station]]\nid = \"RCV\"\nkind = \"receive\"\n\n\
         [[station]]\nid = \"ST10\"\noperation = \"assemble\"\nkind = \"process\"\n\
         starts_units = true\npart = \"FG-1\"\ncomplete_code = \"DONE\"\n\n\
         {device}[[station]]\nid = \"ST20\"\noperation = \"test\"\nkind = \"process\"\n\
         enforce_route = true\ncomplete_code = \"DONE\"\n{st20_interlock}\
           [[station.feeder]]\n  part = \"P1\"\n  qty_per_unit = 1\n\
           [[station.feeder]]\n  part = \"P2\"\n  qty_per_unit = 1\n\n\
         [[station]]\nid = \"ST30\"\noperation = \"final\"\nkind = \"process\"\n\
         enforce_route = true\ncomplete_code = \"DONE\"\n\n",
        data_dir.display()
    );
    for (st, port) in STATIONS.iter().zip(ports) {
        s.push_str(&format!(
            "[[scanner]]\nid = \"sc-{st}\"\nport = \"{}\"\nstation = \"{st}\"\ndedup_ms = 0\n\n",
            port.display()
        ));
    }
    s
}

/// `log` without its ANSI colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One pty scanner per station, in [`STATIONS`] order.
struct Scanners(Vec<SimScanner>, Vec<PathBuf>);

impl Scanners {
    fn new() -> Scanners {
        let (mut sims, mut ports) = (Vec::new(), Vec::new());
        for _ in STATIONS {
            let (s, p) = SimScanner::new().unwrap();
            sims.push(s);
            ports.push(p);
        }
        Scanners(sims, ports)
    }

    fn at(&mut self, station: &str) -> &mut SimScanner {
        let i = STATIONS.iter().position(|s| *s == station).unwrap();
        &mut self.0[i]
    }

    /// Scans a code no pattern knows at every station until the gateway logged its rejection
    /// (a pty drops what was written while the port was being set up).
    async fn prime(&mut self, gw: &Proc, run: usize) {
        for st in STATIONS {
            let code = format!("PING-{run}-{st}");
            wait_for(&format!("scanner of {st} read"), WAIT, || {
                self.at(st).scan(&code).unwrap();
                let seen = gw.output().contains(&code);
                async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    seen.then_some(())
                }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
        }
    }

    fn scan(&mut self, station: &str, code: &str) {
        self.at(station).scan(code).unwrap();
    }
}

/// Every record of the aggregator's event log of `ty` (its `record`).
async fn aggregator_records(api: &Api, ty: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let Ok((200, v)) = api
            .get(&format!("/api/v1/events?after_id={after}&limit=1000"))
            .await
        else {
            return out;
        };
        for e in v["events"].as_array().into_iter().flatten() {
            if e["type"] == ty {
                out.push(e["record"].clone());
            }
        }
        match v["next_after"].as_i64() {
            Some(n) if n > after => after = n,
            _ => return out,
        }
    }
}

/// Every record still in the gateway's outbox (what no aggregator acknowledged).
async fn outbox_records(data_dir: &Path) -> Vec<Value> {
    let opts = SqliteConnectOptions::from_str("sqlite:")
        .unwrap()
        .filename(data_dir.join("outbox.db"))
        .read_only(true);
    let Ok(mut conn) = SqliteConnection::connect_with(&opts).await else {
        return Vec::new();
    };
    let rows: Vec<(String,)> = sqlx::query_as("SELECT payload FROM records ORDER BY seq")
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
    let _ = conn.close().await;
    rows.iter()
        .filter_map(|(p,)| serde_json::from_str(p).ok())
        .collect()
}

/// The `scan_rejected` of `raw` at `station` among `records`: its reason.
fn rejection(records: &[Value], station: &str, raw: &str) -> Option<String> {
    records
        .iter()
        .find(|r| {
            (r["type"] == "scan_rejected" || r.get("type").is_none())
                && r["station"] == station
                && r["raw"] == raw
        })
        .and_then(|r| r["reason"].as_str().map(str::to_owned))
}

fn completed(records: &[Value], station: &str, unit: &str) -> bool {
    records.iter().any(|r| {
        (r["type"] == "operation_completed" || r.get("type").is_none())
            && r["station"] == station
            && r["unit"] == unit
    })
}

async fn wait_online_rejection(api: &Api, gw: &Proc, station: &str, raw: &str) -> String {
    wait_for(
        &format!("scan_rejected of {raw} at {station}"),
        WAIT,
        || async {
            rejection(
                &aggregator_records(api, "scan_rejected").await,
                station,
                raw,
            )
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()))
}

/// The `scan_rejected` of `raw` at `station` still in the outbox.
async fn outbox_rejections(dir: &Path, station: &str, raw: &str) -> Vec<String> {
    outbox_records(dir)
        .await
        .iter()
        .filter(|r| r["type"] == "scan_rejected" && r["station"] == station && r["raw"] == raw)
        .filter_map(|r| r["reason"].as_str().map(str::to_owned))
        .collect()
}

/// Waits for the `n`th `scan_rejected` of `raw` at `station` in the outbox: its reason.
async fn wait_outbox_rejection(
    dir: &Path,
    gw: &Proc,
    station: &str,
    raw: &str,
    n: usize,
) -> String {
    wait_for(
        &format!("scan_rejected #{n} of {raw} at {station} in the outbox"),
        WAIT,
        || async {
            let mut r = outbox_rejections(dir, station, raw).await;
            (r.len() >= n).then(|| r.swap_remove(n - 1))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()))
}

async fn wait_outbox_completed(dir: &Path, gw: &Proc, station: &str, unit: &str) {
    wait_for(
        &format!("operation_completed of {unit} at {station} in the outbox"),
        WAIT,
        || async {
            let recs = outbox_records(dir).await;
            let ops: Vec<Value> = recs
                .into_iter()
                .filter(|r| r["type"] == "operation_completed")
                .collect();
            completed(&ops, station, unit).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()))
}

/// Works `unit` at `station`: its scan, then the complete code.
async fn work(scanners: &mut Scanners, unit: &str, station: &str) {
    scanners.scan(station, unit);
    tokio::time::sleep(Duration::from_millis(150)).await;
    scanners.scan(station, "DONE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_route_and_holds_enforced_online_offline_and_after_a_restart() {
    let bins = binaries().unwrap();
    let Some(db) = TestDb::create().await else {
        return;
    };
    if !Mosquitto::available() {
        db.drop_db().await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start().await;
    let agg_http = format!("127.0.0.1:{}", free_port());
    let agg_cfg = dir.path().join("aggregator.toml");
    std::fs::write(
        &agg_cfg,
        format!(
            "[aggregator]\nid = \"agg-route\"\nbatch_max_wait_ms = 20\n[mqtt]\nurl = \"{}\"\n\
             [database]\nurl = \"{}\"\n[http]\nlisten = \"{agg_http}\"\n",
            broker.url(),
            db.url
        ),
    )
    .unwrap();
    let agg_cfg_s = agg_cfg.to_string_lossy().into_owned();
    let mut aggregator = Proc::start(
        "aggregator",
        dir.path(),
        &bins.aggregator,
        &["run", "--config", &agg_cfg_s],
    )
    .unwrap();
    let api = Api::new(&agg_http);
    api.wait_healthy(Duration::from_secs(60)).await.unwrap();
    let (st, v) = api
        .post(
            "/api/v1/routes",
            &json!({"part": "FG-1", "version": "1", "operations": [
                {"station": "ST10", "operation": "assemble"},
                {"station": "ST20", "operation": "test"},
                {"station": "ST30", "operation": "final"}]}),
        )
        .await
        .unwrap();
    assert_eq!(st, 201, "{v}");

    let mut scanners = Scanners::new();
    let data = dir.path().join("gw");
    let gw_cfg = dir.path().join("gw.toml");
    std::fs::write(
        &gw_cfg,
        gateway_config(&data, &broker.url(), &agg_http, "allow", &scanners.1, None),
    )
    .unwrap();
    let gw_cfg_s = gw_cfg.to_string_lossy().into_owned();
    let mut gw = Proc::start(
        "gateway",
        dir.path(),
        &bins.gateway,
        &["run", "--config", &gw_cfg_s],
    )
    .unwrap();
    scanners.prime(&gw, 1).await;

    // 1. online. SN1 skips ST20.
    work(&mut scanners, "SN1", "ST10").await;
    wait_for("SN1 assembled", WAIT, || async {
        let ops = aggregator_records(&api, "operation_completed").await;
        completed(&ops, "ST10", "SN1").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
    scanners.scan("ST30", "SN1");
    let why = wait_online_rejection(&api, &gw, "ST30", "SN1").await;
    assert_eq!(why, "missing operation test at ST20");
    // SN2 passes every operation.
    for st in ["ST10", "ST20", "ST30"] {
        work(&mut scanners, "SN2", st).await;
        wait_for(&format!("SN2 done at {st}"), WAIT, || async {
            let ops = aggregator_records(&api, "operation_completed").await;
            completed(&ops, st, "SN2").then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
    }
    let (_, status) = api.get("/api/v1/units/SN2/route-status").await.unwrap();
    assert_eq!(status["complete"], true, "{status}");

    // 2. holds on a unit and a lot (received first: a hold needs the lot to exist).
    scanners.scan("RCV", "LOT-P1-1");
    wait_for("lot hold placed", WAIT, || async {
        let (st, _) = api
            .post(
                "/api/v1/holds",
                &json!({"kind": "lot", "id": "LOT-P1-1", "reason": "cracked screws", "by": "qe"}),
            )
            .await
            .ok()?;
        (st == 201).then_some(())
    })
    .await
    .unwrap();
    let (st, v) = api
        .post(
            "/api/v1/holds",
            &json!({"kind": "unit", "id": "SN2", "reason": "bearing noise", "by": "qe"}),
        )
        .await
        .unwrap();
    assert_eq!(st, 201, "{v}");
    wait_for("both holds at the gateway", WAIT, || async {
        plain(&gw.output())
            .contains("holds received holds=2")
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", gw.output(), aggregator.output()));
    scanners.scan("ST20", "LOT-P1-1");
    let why = wait_online_rejection(&api, &gw, "ST20", "LOT-P1-1").await;
    assert_eq!(why, "on hold: cracked screws (lot LOT-P1-1)");
    scanners.scan("ST30", "SN2");
    let why = wait_online_rejection(&api, &gw, "ST30", "SN2").await;
    assert_eq!(why, "on hold: bearing noise (unit SN2)");
    // SN3 assembled while online; SN4 assembled too.
    for u in ["SN3", "SN4"] {
        work(&mut scanners, u, "ST10").await;
        wait_for(&format!("{u} assembled"), WAIT, || async {
            let ops = aggregator_records(&api, "operation_completed").await;
            completed(&ops, "ST10", u).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
    }

    // 3. aggregator and broker down.
    aggregator.kill();
    broker.down(true);
    scanners.scan("ST30", "SN3");
    let why = wait_outbox_rejection(&data, &gw, "ST30", "SN3", 1).await;
    assert_eq!(
        why,
        "missing operation test at ST20 (route service unreachable; decided from this line's history)"
    );
    work(&mut scanners, "SN4", "ST20").await;
    wait_outbox_completed(&data, &gw, "ST20", "SN4").await;
    work(&mut scanners, "SN4", "ST30").await;
    wait_outbox_completed(&data, &gw, "ST30", "SN4").await;

    // 4. restarted while both stay down.
    assert!(
        gw.terminate(Duration::from_secs(10)).is_some(),
        "{}",
        gw.output()
    );
    let mut gw = Proc::start(
        "gateway2",
        dir.path(),
        &bins.gateway,
        &["run", "--config", &gw_cfg_s],
    )
    .unwrap();
    scanners.prime(&gw, 2).await;
    // (Rejections the aggregator acknowledged before it went down are gone from the outbox.)
    let before = outbox_rejections(&data, "ST30", "SN2").await.len();
    scanners.scan("ST30", "SN2");
    let why = wait_outbox_rejection(&data, &gw, "ST30", "SN2", before + 1).await;
    assert_eq!(why, "on hold: bearing noise (unit SN2)");
    let before = outbox_rejections(&data, "ST20", "LOT-P1-1").await.len();
    scanners.scan("ST20", "LOT-P1-1");
    let why = wait_outbox_rejection(&data, &gw, "ST20", "LOT-P1-1", before + 1).await;
    assert_eq!(why, "on hold: cracked screws (lot LOT-P1-1)");
    scanners.scan("ST30", "SN3");
    let why = wait_outbox_rejection(&data, &gw, "ST30", "SN3", 2).await;
    assert_eq!(
        why,
        "missing operation test at ST20 (route service unreachable; decided from this line's history)"
    );
    gw.kill();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_route_unreachable_block_refuses_and_allow_accepts() {
    let bins = binaries().unwrap();
    for policy in ["block", "allow"] {
        let dir = tempfile::tempdir().unwrap();
        let mut scanners = Scanners::new();
        let data = dir.path().join("gw");
        let cfg = dir.path().join("gw.toml");
        // Nothing listens on either port.
        let closed = format!("127.0.0.1:{}", free_port());
        let mqtt = format!("mqtt://127.0.0.1:{}", free_port());
        // The interlock: a coil (block: starts true, refused → false) or a holding register
        // (allow: starts 7, accepted → 1), read back from the simulator.
        let bank = SimBank::new();
        let area = if policy == "block" { "coil" } else { "holding" };
        if policy == "block" {
            bank.set_coil(10, true);
        } else {
            bank.set_holding(10, &[7]);
        }
        let sim = TcpSim::start("127.0.0.1:0".parse().unwrap(), bank.clone())
            .await
            .unwrap();
        let sim_addr = sim.local_addr().to_string();
        std::fs::write(
            &cfg,
            gateway_config(
                &data,
                &mqtt,
                &closed,
                policy,
                &scanners.1,
                Some(Interlock::Modbus {
                    addr: &sim_addr,
                    area,
                }),
            ),
        )
        .unwrap();
        let cfg_s = cfg.to_string_lossy().into_owned();
        let gw = Proc::start(
            &format!("gateway-{policy}"),
            dir.path(),
            &bins.gateway,
            &["run", "--config", &cfg_s],
        )
        .unwrap();
        scanners.prime(&gw, 1).await;
        work(&mut scanners, "SN7", "ST20").await;
        if policy == "block" {
            let why = wait_outbox_rejection(&data, &gw, "ST20", "SN7", 1).await;
            assert!(
                why.starts_with("route service unreachable: cannot connect"),
                "{why}"
            );
            wait_for("the interlock coil written false", WAIT, || async {
                (!bank.with_regs(|r| r.coils[10])).then_some(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
        } else {
            wait_outbox_completed(&data, &gw, "ST20", "SN7").await;
            let refused = outbox_rejections(&data, "ST20", "SN7").await;
            assert!(refused.is_empty(), "{refused:?}");
            wait_for("the interlock register written 1", WAIT, || async {
                (bank.holding(10, 1) == [1]).then_some(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
        }
        assert!(
            plain(&gw.output()).contains("interlock written"),
            "{}",
            gw.output()
        );
        drop(sim);
    }
}

/// The interlock on an OPC UA device: the verdicts of ST20 are OPC UA Writes of the tag's Int32
/// node (on a session of the gateway's own next to the reading one), read back from the
/// simulated server — accepted (`allow`, aggregator unreachable) writes 1, and after the
/// node is set to 7 behind the gateway's back, a second accepted unit writes 1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_interlock_written_to_an_opc_ua_node() {
    use threadline_simulators::opcua::{SimOpcUa, SimOpcUaConfig, SimValue};
    let bins = binaries().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut scanners = Scanners::new();
    let data = dir.path().join("gw");
    let cfg = dir.path().join("gw.toml");
    let closed = format!("127.0.0.1:{}", free_port());
    let mqtt = format!("mqtt://127.0.0.1:{}", free_port());
    let sim = SimOpcUa::start(SimOpcUaConfig {
        variables: vec![("ST20.Ok".to_owned(), SimValue::Int32(7))],
        ..SimOpcUaConfig::default()
    })
    .await
    .unwrap();
    let (endpoint, node) = (sim.endpoint(), sim.node_id("ST20.Ok"));
    std::fs::write(
        &cfg,
        gateway_config(
            &data,
            &mqtt,
            &closed,
            "allow",
            &scanners.1,
            Some(Interlock::OpcUa {
                endpoint: &endpoint,
                node: &node,
            }),
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let gw = Proc::start(
        "gateway-ua",
        dir.path(),
        &bins.gateway,
        &["run", "--config", &cfg_s],
    )
    .unwrap();
    scanners.prime(&gw, 1).await;
    let written = |want: i32| {
        let sim = &sim;
        let gw = &gw;
        async move {
            wait_for(
                &format!("the interlock node written {want}"),
                WAIT,
                || async { (sim.get("ST20.Ok") == Some(SimValue::Int32(want))).then_some(()) },
            )
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
        }
    };
    work(&mut scanners, "SN7", "ST20").await;
    wait_outbox_completed(&data, &gw, "ST20", "SN7").await;
    written(1).await;
    sim.set("ST20.Ok", SimValue::Int32(7)).unwrap();
    written(7).await;
    work(&mut scanners, "SN8", "ST20").await;
    wait_outbox_completed(&data, &gw, "ST20", "SN8").await;
    written(1).await;
    let log = plain(&gw.output());
    assert_eq!(log.matches("interlock written").count(), 2, "{log}");
    assert!(!log.contains("interlock write failed"), "{log}");
    drop(sim);
}

/// The interlock on a Modbus RTU device: the write takes its turn on the serial bus between the
/// polls of the same unit (one port, one worker), and the register is read back from the
/// simulated RTU unit — as is the poll that follows it (the reading shows the written value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_interlock_written_over_modbus_rtu() {
    use threadline_simulators::modbus::RtuSim;
    let bins = binaries().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut scanners = Scanners::new();
    let data = dir.path().join("gw");
    let cfg = dir.path().join("gw.toml");
    let closed = format!("127.0.0.1:{}", free_port());
    let mqtt = format!("mqtt://127.0.0.1:{}", free_port());
    let bank = SimBank::new();
    bank.set_holding(10, &[7]);
    let rtu = RtuSim::start(std::collections::HashMap::from([(1u8, bank.clone())])).unwrap();
    std::fs::write(
        &cfg,
        gateway_config(
            &data,
            &mqtt,
            &closed,
            "allow",
            &scanners.1,
            Some(Interlock::Rtu { port: rtu.path() }),
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let gw = Proc::start(
        "gateway-rtu",
        dir.path(),
        &bins.gateway,
        &["run", "--config", &cfg_s],
    )
    .unwrap();
    scanners.prime(&gw, 1).await;
    // The poller reads the register (7) over the bus first.
    wait_for("the RTU tag polled", WAIT, || async {
        outbox_records(&data)
            .await
            .iter()
            .any(|r| r["type"] == "reading" && r["tag"] == "st20.ok" && r["value"] == 7)
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
    work(&mut scanners, "SN7", "ST20").await;
    wait_outbox_completed(&data, &gw, "ST20", "SN7").await;
    wait_for(
        "the interlock register written 1 over RTU",
        WAIT,
        || async { (bank.holding(10, 1) == [1]).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
    // The next poll on the same bus reads what the interlock wrote.
    wait_for("the written value polled back", WAIT, || async {
        outbox_records(&data)
            .await
            .iter()
            .any(|r| r["type"] == "reading" && r["tag"] == "st20.ok" && r["value"] == 1)
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
    let log = plain(&gw.output());
    assert!(log.contains("interlock written"), "{log}");
    assert!(!log.contains("interlock write failed"), "{log}");
    drop(rtu);
}

/// Starts Mosquitto and the aggregator on a fresh database, posts `route`.
async fn start_plant(dir: &Path, db: &TestDb, route: Value) -> (Mosquitto, Proc, Api, String) {
    let bins = binaries().unwrap();
    let broker = Mosquitto::start().await;
    let agg_http = format!("127.0.0.1:{}", free_port());
    let agg_cfg = dir.join("aggregator.toml");
    std::fs::write(
        &agg_cfg,
        format!(
            "[aggregator]\nid = \"agg-route\"\nbatch_max_wait_ms = 20\n[mqtt]\nurl = \"{}\"\n\
             [database]\nurl = \"{}\"\n[http]\nlisten = \"{agg_http}\"\n",
            broker.url(),
            db.url
        ),
    )
    .unwrap();
    let agg_cfg_s = agg_cfg.to_string_lossy().into_owned();
    let aggregator = Proc::start(
        "aggregator",
        dir,
        &bins.aggregator,
        &["run", "--config", &agg_cfg_s],
    )
    .unwrap();
    let api = Api::new(&agg_http);
    api.wait_healthy(Duration::from_secs(60)).await.unwrap();
    let (st, v) = api.post("/api/v1/routes", &route).await.unwrap();
    assert_eq!(st, 201, "{v}");
    (broker, aggregator, api, agg_http)
}

/// Waits until the aggregator has `unit`'s operation at `station`.
async fn wait_completed(api: &Api, gw: &Proc, station: &str, unit: &str) {
    wait_for(&format!("{unit} done at {station}"), WAIT, || async {
        let ops = aggregator_records(api, "operation_completed").await;
        completed(&ops, station, unit).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_lot_of_a_wrong_part_refused_and_a_held_lot_stops_the_units_it_reached_offline() {
    let bins = binaries().unwrap();
    let Some(db) = TestDb::create().await else {
        return;
    };
    if !Mosquitto::available() {
        db.drop_db().await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, mut aggregator, api, agg_http) = start_plant(
        dir.path(),
        &db,
        json!({"part": "FG-1", "version": "1", "operations": [
            {"station": "ST10", "operation": "assemble"},
            {"station": "ST20", "operation": "test", "materials": ["P1"]},
            {"station": "ST30", "operation": "final"}]}),
    )
    .await;
    // A lot whose label names no part: the aggregator knows it from the ERP.
    let (st, v) = api
        .post("/api/v1/lots", &json!({"lot": "BATCH-7", "part": "P2"}))
        .await
        .unwrap();
    assert_eq!(st, 200, "{v}");

    let mut scanners = Scanners::new();
    let data = dir.path().join("gw");
    let gw_cfg = dir.path().join("gw.toml");
    std::fs::write(
        &gw_cfg,
        gateway_config(&data, &broker.url(), &agg_http, "block", &scanners.1, None),
    )
    .unwrap();
    let gw_cfg_s = gw_cfg.to_string_lossy().into_owned();
    let gw = Proc::start(
        "gateway",
        dir.path(),
        &bins.gateway,
        &["run", "--config", &gw_cfg_s],
    )
    .unwrap();
    scanners.prime(&gw, 1).await;

    // Online: SN1 started at ST10, current at ST20.
    work(&mut scanners, "SN1", "ST10").await;
    wait_completed(&api, &gw, "ST10", "SN1").await;
    scanners.scan("ST20", "SN1");
    scanners.scan("ST20", "LOT-P2-1");
    let why = wait_online_rejection(&api, &gw, "ST20", "LOT-P2-1").await;
    assert_eq!(
        why,
        "lot LOT-P2-1 (part P2) is not a material of operation test at ST20 (route FG-1 version 1 takes P1)"
    );
    scanners.scan("ST20", "BATCH-7");
    let why = wait_online_rejection(&api, &gw, "ST20", "BATCH-7").await;
    assert_eq!(
        why,
        "lot BATCH-7 (part P2) is not a material of operation test at ST20 (route FG-1 version 1 takes P1)"
    );
    // A P1 lot (received first, so that it can be held) is loaded and consumed by SN1.
    scanners.scan("RCV", "LOT-P1-5");
    scanners.scan("ST20", "LOT-P1-5");
    tokio::time::sleep(Duration::from_millis(150)).await;
    scanners.scan("ST20", "DONE");
    wait_completed(&api, &gw, "ST20", "SN1").await;
    let ops = aggregator_records(&api, "operation_completed").await;
    let at20 = ops
        .iter()
        .find(|o| o["station"] == "ST20" && o["unit"] == "SN1")
        .unwrap();
    assert_eq!(at20["materials"][0]["lot"], "LOT-P1-5", "{at20}");
    let loaded = aggregator_records(&api, "material_loaded").await;
    assert!(
        !loaded
            .iter()
            .any(|m| m["lot"] == "LOT-P2-1" || m["lot"] == "BATCH-7"),
        "{loaded:?}"
    );

    // SN2 current at ST20 (for the offline materials check below).
    work(&mut scanners, "SN2", "ST10").await;
    wait_completed(&api, &gw, "ST10", "SN2").await;
    scanners.scan("ST20", "SN2");
    // A lot scanned after it is handled after it (same station, in order): once it is loaded,
    // SN2 is current.
    scanners.scan("ST20", "LOT-P1-6");
    wait_for("LOT-P1-6 loaded at ST20", WAIT, || async {
        aggregator_records(&api, "material_loaded")
            .await
            .iter()
            .any(|m| m["lot"] == "LOT-P1-6")
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
    wait_for("lot hold placed", WAIT, || async {
        let (st, _) = api
            .post(
                "/api/v1/holds",
                &json!({"kind": "lot", "id": "LOT-P1-5", "reason": "cracked screws", "by": "qe"}),
            )
            .await
            .ok()?;
        (st == 201).then_some(())
    })
    .await
    .unwrap();
    wait_for("the hold at the gateway", WAIT, || async {
        plain(&gw.output())
            .contains("holds received holds=1")
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", gw.output(), aggregator.output()));

    // Aggregator and broker down: the cache alone refuses SN1 (it consumed the held lot on
    // this line) and a P2 lot (the cached route).
    aggregator.kill();
    broker.down(true);
    scanners.scan("ST30", "SN1");
    let why = wait_outbox_rejection(&data, &gw, "ST30", "SN1", 1).await;
    assert_eq!(
        why,
        "on hold: cracked screws (lot LOT-P1-5, via lot LOT-P1-5)"
    );
    scanners.scan("ST20", "LOT-P2-2");
    let why = wait_outbox_rejection(&data, &gw, "ST20", "LOT-P2-2", 1).await;
    assert!(
        why.starts_with("lot LOT-P2-2 (part P2) is not a material of operation test at ST20"),
        "{why}"
    );
    drop(gw);
    db.drop_db().await;
}
