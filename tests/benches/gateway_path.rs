//! The whole gateway path in one benchmark (issue 19): poll → station logic → outbox → MQTT →
//! aggregator → commit → ack, with the real binaries.
//!
//! - 10 simulated Modbus TCP PLCs (this process, their own thread) × 1,000 tags at
//!   non-contiguous addresses (u16 / f32 alternating, one-register holes), every value changing
//!   every 100 ms scan: 100,000 values/s offered;
//! - `threadline-gateway run` polling them (its outbox on disk), a real Mosquitto on a free port,
//!   `threadline-aggregator run` on SQLite (default; a file in a temporary directory) or
//!   PostgreSQL (`TL_BENCH_DB=postgres`, a fresh database at THREADLINE_TEST_DATABASE_URL);
//! - every 10 s over the run: values/s acked (the gateway's `threadline_outbox_acked_total`),
//!   outbox depth, gateway CPU (utime + stime from /proc, % of one core) and RSS;
//! - end-to-end latency: a probe tag on PLC 0 is set to a new value every 500 ms; the time
//!   from that write until `GET /api/v1/readings?tag=probe` returns the value (polled every
//!   10 ms) is a "PLC change → queryable in the API" sample. p50 / p99 / max at the end.
//!
//! ```text
//! THREADLINE_E2E_RELEASE=1 cargo bench --workspace --bench gateway_path            # SQLite, 60 s
//! THREADLINE_E2E_RELEASE=1 TL_BENCH_DB=postgres TL_BENCH_SECS=120 cargo bench --workspace --bench gateway_path
//! ```
//!
//! Without `THREADLINE_E2E_RELEASE=1` the debug binaries are measured (and the bench says so).
//! Targets (PRODUCT.md): 100,000 values/s on ≤ 1 core, RSS ≤ 64 MB with or without a backlog,
//! PLC change → API p99 ≤ 1 s, outbox flat.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use threadline_e2e::{Api, Mosquitto, Proc, TestDb, binaries, free_port, wait_for};
use threadline_simulators::modbus::{SimBank, TcpSim};

const DEVICES: usize = 10;
const TAGS: usize = 1000;
const SCAN_MS: u64 = 100;
/// Holding register of the probe tag on PLC 0 (above the bench tags).
const PROBE_AT: u16 = 3000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (address, is_f32) of every tag: u16, hole, f32, hole, u16, … (as the acquisition bench).
fn layout() -> Vec<(u16, bool)> {
    let mut pos = 0u16;
    (0..TAGS)
        .map(|i| {
            let f = i % 2 == 1;
            let at = pos;
            pos += if f { 3 } else { 2 };
            (at, f)
        })
        .collect()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mb(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One sample of a Prometheus text metric (no labels).
async fn metric(http: &reqwest::Client, addr: &str, name: &str) -> Option<f64> {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A probe write: its value, when it was written, and a wall-clock lower bound for its `ts`.
struct Probe {
    value: u16,
    at: Instant,
    from: String,
}

fn gateway_toml(
    data_dir: &str,
    broker: &str,
    health: &str,
    plcs: &[std::net::SocketAddr],
) -> String {
    let mut s = format!(
        "[gateway]\nid = \"gw-path\"\nplant = \"plant-a\"\nline = \"line-1\"\ndata_dir = \"{data_dir}\"\n\
         buffer_max_mb = 2048\n\n[mqtt]\nurl = \"{broker}\"\nkeep_alive_s = 15\n\n[health]\nlisten = \"{health}\"\n"
    );
    for (i, addr) in plcs.iter().enumerate() {
        s.push_str(&format!(
            "\n[[device]]\nid = \"plc{i}\"\nprotocol = \"modbus-tcp\"\naddress = \"{addr}\"\ntimeout_ms = 1000\n\
             max_gap = 8\nmax_registers_per_read = 120\n"
        ));
        for (k, (a, f)) in layout().into_iter().enumerate() {
            let ty = if f { "f32" } else { "u16" };
            s.push_str(&format!(
                "[[device.tag]]\nname = \"d{i}.t{k}\"\narea = \"holding\"\naddress = {a}\ntype = \"{ty}\"\nscan_ms = {SCAN_MS}\n"
            ));
        }
        if i == 0 {
            s.push_str(&format!(
                "[[device.tag]]\nname = \"probe\"\narea = \"holding\"\naddress = {PROBE_AT}\ntype = \"u16\"\nscan_ms = {SCAN_MS}\n"
            ));
        }
    }
    s
}

fn main() {
    let secs = env_u64("TL_BENCH_SECS", 60);
    let postgres = std::env::var("TL_BENCH_DB").is_ok_and(|v| v == "postgres");
    let release = std::env::var("THREADLINE_E2E_RELEASE").is_ok_and(|v| v == "1");
    if !Mosquitto::available() {
        eprintln!("gateway_path bench: mosquitto not installed; nothing measured");
        return;
    }
    let bins = binaries().expect("binaries");

    // The PLCs on their own runtime thread.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim")
        .enable_all()
        .build()
        .unwrap();
    let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
    let mut sims = Vec::new();
    for d in 0..DEVICES {
        let bank = SimBank::new();
        let sim = sim_rt
            .block_on(TcpSim::start("127.0.0.1:0".parse().unwrap(), bank.clone()))
            .unwrap();
        let probes = probes.clone();
        sim_rt.spawn(async move {
            let lay = layout();
            let mut n: u32 = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(SCAN_MS / 2));
            let mut last_wall = threadline_shared::time::format(&threadline_shared::time::now());
            loop {
                tick.tick().await;
                n = n.wrapping_add(1);
                bank.with_regs(|r| {
                    for (k, &(a, f)) in lay.iter().enumerate() {
                        let a = usize::from(a);
                        if f {
                            let b = (n as f32 * 0.5 + k as f32).to_be_bytes();
                            r.holding[a] = u16::from_be_bytes([b[0], b[1]]);
                            r.holding[a + 1] = u16::from_be_bytes([b[2], b[3]]);
                        } else {
                            r.holding[a] = (n as u16).wrapping_add(k as u16);
                        }
                    }
                });
                // PLC 0: a new probe value every 500 ms.
                if d == 0 && n.is_multiple_of(10) {
                    let value = (n / 10) as u16;
                    let wall = threadline_shared::time::format(&threadline_shared::time::now());
                    bank.set_holding(PROBE_AT, &[value]);
                    probes.lock().unwrap().push(Probe {
                        value,
                        at: Instant::now(),
                        from: std::mem::replace(&mut last_wall, wall),
                    });
                }
            }
        });
        sims.push(sim);
    }
    let plcs: Vec<_> = sims.iter().map(TcpSim::local_addr).collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let pg = if postgres {
            match TestDb::create().await {
                Some(db) => Some(db),
                None => {
                    eprintln!("gateway_path bench: PostgreSQL unreachable; nothing measured");
                    return;
                }
            }
        } else {
            None
        };
        let db_url = match &pg {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}", dir.path().join("agg.db").display()),
        };
        let broker = Mosquitto::start_with("max_queued_messages 100000\nmax_inflight_messages 1000").await;
        let agg_http = format!("127.0.0.1:{}", free_port());
        let agg_cfg = dir.path().join("aggregator.toml");
        std::fs::write(
            &agg_cfg,
            format!(
                "[aggregator]\nid = \"agg-path\"\n[mqtt]\nurl = \"{}\"\n[database]\nurl = \"{db_url}\"\n\
                 [http]\nlisten = \"{agg_http}\"\n",
                broker.url()
            ),
        )
        .unwrap();
        let agg_cfg = agg_cfg.to_string_lossy().into_owned();
        let mut aggregator =
            Proc::start("aggregator", dir.path(), &bins.aggregator, &["run", "--config", &agg_cfg]).unwrap();
        let api = Api::new(&agg_http);
        api.wait_healthy(Duration::from_secs(60)).await.unwrap();

        let gw_health = format!("127.0.0.1:{}", free_port());
        let gw_cfg = dir.path().join("gateway.toml");
        std::fs::write(
            &gw_cfg,
            gateway_toml(
                &dir.path().join("gw").to_string_lossy(),
                &broker.url(),
                &gw_health,
                &plcs,
            ),
        )
        .unwrap();
        let gw_cfg = gw_cfg.to_string_lossy().into_owned();
        let mut gateway =
            Proc::start("gateway", dir.path(), &bins.gateway, &["run", "--config", &gw_cfg]).unwrap();
        let pid = gateway.child.id();
        let http = reqwest::Client::new();
        wait_for("the first values acked", Duration::from_secs(60), || async {
            metric(&http, &gw_health, "threadline_outbox_acked_total")
                .await
                .filter(|n| *n > 0.0)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\ngateway:\n{}\naggregator:\n{}", gateway.output(), aggregator.output()));
        // Warm-up: connections, the first partitions, steady scans.
        tokio::time::sleep(Duration::from_secs(5)).await;
        probes.lock().unwrap().clear();

        println!(
            "gateway_path: {DEVICES} PLCs x {TAGS} tags (u16/f32, holes), scan {SCAN_MS} ms = {} values/s offered; \
             aggregator on {}; {} binaries; {secs} s; load average before {}",
            DEVICES * TAGS * 1000 / SCAN_MS as usize,
            if postgres { "PostgreSQL" } else { "SQLite" },
            if release { "release" } else { "DEBUG" },
            loadavg()
        );
        println!("| t (s) | values/s acked | outbox depth | gateway CPU (% of one core) | gateway RSS (MB) |");
        println!("|---|---|---|---|---|");

        // Latency probes: poll the API for each probe value until it is there.
        let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
        let missed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = stop_flag();
        let prober = {
            let (probes, latencies, missed, stop, base) =
                (probes.clone(), latencies.clone(), missed.clone(), stop.clone(), agg_http.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let next = { probes.lock().unwrap().first().map(|p| (p.value, p.at, p.from.clone())) };
                    let Some((value, at, from)) = next else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let url = format!(
                        "http://{base}/api/v1/readings?tag=probe&gateway=gw-path&from={}&limit=1000",
                        from.replace(':', "%3A").replace('+', "%2B")
                    );
                    loop {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        let found = match http.get(&url).send().await {
                            Ok(r) => r.json::<serde_json::Value>().await.ok().is_some_and(|v| {
                                v["readings"].as_array().is_some_and(|rs| {
                                    rs.iter().any(|r| r["value"].as_u64() == Some(u64::from(value)))
                                })
                            }),
                            Err(_) => false,
                        };
                        if found {
                            latencies.lock().unwrap().push(at.elapsed().as_secs_f64() * 1e3);
                            break;
                        }
                        if at.elapsed() > Duration::from_secs(30) {
                            missed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    probes.lock().unwrap().remove(0);
                }
            })
        };

        let t0 = Instant::now();
        let (cpu_start, acked_start) = (
            cpu_seconds(pid),
            metric(&http, &gw_health, "threadline_outbox_acked_total").await.unwrap_or(0.0),
        );
        let (mut cpu_prev, mut acked_prev, mut t_prev) = (cpu_start, acked_start, t0);
        let (mut rss_max, mut depth_max) = (0.0f64, 0.0f64);
        while t0.elapsed() < Duration::from_secs(secs) {
            tokio::time::sleep(Duration::from_secs(10).min(Duration::from_secs(secs).saturating_sub(t0.elapsed()))).await;
            let now = Instant::now();
            let cpu = cpu_seconds(pid);
            let acked = metric(&http, &gw_health, "threadline_outbox_acked_total").await.unwrap_or(acked_prev);
            let depth = metric(&http, &gw_health, "threadline_outbox_depth").await.unwrap_or(0.0);
            let rss = rss_mb(pid);
            let dt = (now - t_prev).as_secs_f64();
            rss_max = rss_max.max(rss);
            depth_max = depth_max.max(depth);
            println!(
                "| {:.0} | {:.0} | {depth:.0} | {:.1} % | {rss:.1} |",
                (now - t0).as_secs_f64(),
                (acked - acked_prev) / dt,
                (cpu - cpu_prev) / dt * 100.0
            );
            (cpu_prev, acked_prev, t_prev) = (cpu, acked, now);
        }
        let total = t0.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = prober.await;
        let mut lat = latencies.lock().unwrap().clone();
        lat.sort_by(f64::total_cmp);
        println!(
            "whole run: {:.0} values/s acked, gateway CPU {:.1} % of one core, RSS max {rss_max:.1} MB, outbox depth max {depth_max:.0}; \
             PLC change → API: n={} p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, {} not seen within 30 s; load average after {}",
            (acked_prev - acked_start) / total,
            (cpu_prev - cpu_start) / total * 100.0,
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN),
            missed.load(std::sync::atomic::Ordering::Relaxed),
            loadavg()
        );
        gateway.terminate(Duration::from_secs(10));
        aggregator.terminate(Duration::from_secs(10));
        if let Some(db) = pg {
            db.drop_db().await;
        }
    });
}

/// A stop flag shared by the prober and the main loop.
fn stop_flag() -> Arc<std::sync::atomic::AtomicBool> {
    Arc::new(std::sync::atomic::AtomicBool::new(false))
}
