//! Sparkplug CPU benchmark: what `[sparkplug]` adds to the gateway's CPU at 10,000 values/s.
//!
//! The real `threadline-gateway run` binary polls one simulated Modbus TCP PLC (in this process,
//! on its own thread) with 1,000 u16 tags at a 100 ms scan, every value changing every scan:
//! 10,000 recorded values/s through the whole Threadline path (deadband → outbox → MQTT → ack by
//! a stand-in aggregator) to a real Mosquitto. The same run is made without and with a
//! `[sparkplug]` section, alternating (A B A B …) so the machine's load hits both alike; the CPU
//! is the gateway process's own (utime + stime from `/proc/{pid}/stat`) over the measured window
//! after a warm-up. A subscriber counts the Sparkplug metrics that arrive, so the run proves the
//! values were really published.
//!
//! `cargo bench -p threadline-gateway --bench sparkplug` (BENCH_SECS=N per run, default 20;
//! BENCH_ROUNDS=N pairs, default 2). Needs /usr/sbin/mosquitto.

#![allow(clippy::unwrap_used)]

#[path = "../tests/delivery_support/mod.rs"]
mod delivery_support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use delivery_support::{Acker, Mosquitto, gateway_toml};
use prost::Message as _;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use threadline_gateway::publish::sparkplug::proto::Payload;
use threadline_simulators::modbus::{SimBank, TcpSim};
use tokio_util::sync::CancellationToken;

const TAGS: u16 = 1000;
const SCAN_MS: u64 = 100;
const BIN: &str = env!("CARGO_BIN_EXE_threadline-gateway");

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
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

/// DDATA messages seen by [`sparkplug_counter`].
static DDATA_MESSAGES: AtomicU64 = AtomicU64::new(0);

/// Counts the metrics of every Sparkplug DDATA on the broker (and the messages).
async fn sparkplug_counter(port: u16, metrics: Arc<AtomicU64>, stop: CancellationToken) {
    let mut opts = MqttOptions::new("bench-spb-counter", "127.0.0.1", port);
    opts.set_max_packet_size(16 * 1024 * 1024, 1024);
    let (client, mut el) = AsyncClient::new(opts, 64);
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => return,
            ev = el.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                client
                    .subscribe("spBv1.0/+/DDATA/#", QoS::AtMostOnce)
                    .await
                    .unwrap();
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let n = Payload::decode(p.payload.as_ref()).map_or(0, |p| p.metrics.len());
                metrics.fetch_add(n as u64, Ordering::Relaxed);
                DDATA_MESSAGES.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

struct Run {
    sparkplug: bool,
    cpu_pct: f64,
    values_per_s: f64,
    spb_metrics_per_s: f64,
    ddata_per_s: f64,
    rss_mb: f64,
}

async fn run_once(
    broker: &Mosquitto,
    acker: &Acker,
    sim: &TcpSim,
    spb_metrics: &AtomicU64,
    sparkplug: bool,
    secs: u64,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = gateway_toml(&dir.path().join("data"), &broker.url(), "", 256);
    if sparkplug {
        toml.push_str("\n[sparkplug]\ngroup_id = \"bench\"\nedge_node_id = \"gw\"\n");
    }
    toml.push_str(&format!(
        "\n[[device]]\nid = \"plc\"\nprotocol = \"modbus-tcp\"\naddress = \"{}\"\ntimeout_ms = 1000\nmax_registers_per_read = 120\n",
        sim.local_addr()
    ));
    for k in 0..TAGS {
        toml.push_str(&format!(
            "[[device.tag]]\nname = \"t{k}\"\narea = \"holding\"\naddress = {k}\nscan_ms = {SCAN_MS}\n"
        ));
    }
    let config = dir.path().join("gw.toml");
    std::fs::write(&config, toml).unwrap();
    let mut gw: Child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = gw.id();
    // Warm-up: connected, first values, births.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu0, acked0, spb0, msg0, t0) = (
        cpu_seconds(pid),
        acker.count(),
        spb_metrics.load(Ordering::Relaxed),
        DDATA_MESSAGES.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu1, acked1, spb1, msg1, dt) = (
        cpu_seconds(pid),
        acker.count(),
        spb_metrics.load(Ordering::Relaxed),
        DDATA_MESSAGES.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    let rss = rss_mb(pid);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = gw.wait();
    Run {
        sparkplug,
        cpu_pct: (cpu1 - cpu0) / dt * 100.0,
        values_per_s: (acked1 - acked0) as f64 / dt,
        spb_metrics_per_s: (spb1 - spb0) as f64 / dt,
        ddata_per_s: (msg1 - msg0) as f64 / dt,
        rss_mb: rss,
    }
}

fn main() {
    if !std::path::Path::new(delivery_support::MOSQUITTO).exists() {
        eprintln!("sparkplug bench: {} not found", delivery_support::MOSQUITTO);
        return;
    }
    let secs = env_u64("BENCH_SECS", 20);
    let rounds = env_u64("BENCH_ROUNDS", 2);

    // The simulator on its own runtime thread: every tag changes twice per scan.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim")
        .enable_all()
        .build()
        .unwrap();
    let bank = SimBank::new();
    let sim = sim_rt
        .block_on(TcpSim::start("127.0.0.1:0".parse().unwrap(), bank.clone()))
        .unwrap();
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        sim_rt.spawn(async move {
            let mut n: u16 = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(SCAN_MS / 2));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                n = n.wrapping_add(1);
                bank.with_regs(|r| {
                    for k in 0..TAGS {
                        r.holding[usize::from(k)] = n.wrapping_add(k);
                    }
                });
            }
        });
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let load_before = loadavg();
    let runs = rt.block_on(async {
        let broker = Mosquitto::start().await;
        let acker = Acker::start(broker.port, "threadline/v1").await;
        let spb_metrics = Arc::new(AtomicU64::new(0));
        tokio::spawn(sparkplug_counter(
            broker.port,
            spb_metrics.clone(),
            stop.clone(),
        ));
        let mut runs = Vec::new();
        for _ in 0..rounds {
            for sparkplug in [false, true] {
                let r = run_once(&broker, &acker, &sim, &spb_metrics, sparkplug, secs).await;
                eprintln!(
                    "sparkplug={:<5} cpu {:5.1} % of one core, {:8.0} values/s acked, {:8.0} Sparkplug metrics/s in {:.0} DDATA/s, RSS {:.1} MB",
                    r.sparkplug, r.cpu_pct, r.values_per_s, r.spb_metrics_per_s, r.ddata_per_s, r.rss_mb
                );
                runs.push(r);
            }
        }
        acker.stop().await;
        runs
    });
    stop.cancel();
    let mean = |sp: bool, f: fn(&Run) -> f64| {
        let v: Vec<f64> = runs.iter().filter(|r| r.sparkplug == sp).map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (off, on) = (mean(false, |r| r.cpu_pct), mean(true, |r| r.cpu_pct));
    println!(
        "| run | gateway CPU (% of one core) | values/s acked | Sparkplug metrics/s | DDATA messages/s | RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {:.1} % | {:.0} | {:.0} | {:.0} | {:.1} MB |",
            if r.sparkplug {
                "with [sparkplug]"
            } else {
                "without"
            },
            r.cpu_pct,
            r.values_per_s,
            r.spb_metrics_per_s,
            r.ddata_per_s,
            r.rss_mb
        );
    }
    println!(
        "mean: without {off:.1} %, with {on:.1} % → Sparkplug adds {:.1} % of one core ({:+.1} % relative); load average before {load_before}, after {}",
        on - off,
        (on - off) / off * 100.0,
        loadavg()
    );
}
