//! Acquisition benchmark: 10 simulated Modbus TCP devices × 1,000 tags at non-contiguous
//! addresses (mixed u16 / f32 with one-register holes), scan 100 ms, every value changing every
//! scan. Counts the TagUpdates the drivers deliver to a consumer and measures CPU and RSS.
//!
//! The drivers and the consumer run on ONE thread (a current-thread runtime on the main thread);
//! the simulators run on their own runtime thread, so the driver CPU is measured per thread
//! (`/proc/thread-self/stat`) and the process total (drivers + simulators) is shown separately.
//! RSS is the whole process (simulators included: 10 register banks of 384 KiB each).
//!
//! `cargo bench -p threadline-gateway --bench acquisition` (BENCH_SECS=N to change the 10 s run,
//! BENCH_SCAN_MS=N for another scan period).

use std::sync::Arc;
use std::time::{Duration, Instant};

use threadline_gateway::drivers::config::DeviceConfig;
use threadline_gateway::drivers::{DeviceMetrics, DriverContext, TagUpdate, spawn_device};
use threadline_shared::event::Quality;
use threadline_simulators::modbus::{SimBank, TcpSim};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const DEVICES: usize = 10;
const TAGS: usize = 1000;

/// Scan period (ms): 100 by default; BENCH_SCAN_MS=20 shows the headroom.
fn scan_ms() -> u64 {
    std::env::var("BENCH_SCAN_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&ms| ms >= 2)
        .unwrap_or(100)
}

/// (address, is_f32) of every tag: u16, hole, f32, hole, u16, …
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

fn device_config(i: usize, addr: std::net::SocketAddr) -> DeviceConfig {
    let mut s = format!(
        "id = \"dev{i}\"\nprotocol = \"modbus-tcp\"\naddress = \"{addr}\"\ntimeout_ms = 1000\nmax_gap = 8\nmax_registers_per_read = 120\n"
    );
    for (k, (a, f)) in layout().into_iter().enumerate() {
        let ty = if f { "f32" } else { "u16" };
        s.push_str(&format!(
            "[[tag]]\nname = \"d{i}.t{k}\"\narea = \"holding\"\naddress = {a}\ntype = \"{ty}\"\nscan_ms = {}\n",
            scan_ms()
        ));
    }
    toml::from_str(&s).expect("bench device config")
}

/// utime + stime of a /proc stat line, in seconds.
fn cpu_seconds(stat_path: &str) -> f64 {
    let text = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the ")" of the command name; utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // rest starts at field 3 (state): utime = field 14 → index 11.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mb() -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);

    // Simulators on their own thread.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim")
        .enable_all()
        .build()
        .expect("sim runtime");
    let stop_sims = CancellationToken::new();
    let mut sims = Vec::new();
    for _ in 0..DEVICES {
        let bank = SimBank::new();
        let sim = sim_rt
            .block_on(TcpSim::start(
                "127.0.0.1:0".parse().expect("addr"),
                bank.clone(),
            ))
            .expect("sim");
        // Values change twice per scan, so every scan sees a new value of every tag.
        let stop = stop_sims.clone();
        sim_rt.spawn(async move {
            let lay = layout();
            let mut n: u32 = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(scan_ms() / 2));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
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
            }
        });
        sims.push(sim);
    }
    let addrs: Vec<_> = sims.iter().map(TcpSim::local_addr).collect();

    // Drivers + consumer on this thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("driver runtime");
    let (good, bad, elapsed, cpu_thread, cpu_proc, rss, requests) = rt.block_on(async {
        let (out, mut rx) = mpsc::channel::<TagUpdate>(8192);
        let (scans, _scans_rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let mut metrics = Vec::new();
        let mut tasks = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let m = Arc::new(DeviceMetrics::default());
            metrics.push(m.clone());
            let ctx = DriverContext {
                out: out.clone(),
                scans: scans.clone(),
                shutdown: shutdown.clone(),
                metrics: m,
                data_dir: std::env::temp_dir(),
            };
            tasks.push(spawn_device(&device_config(i, *addr), ctx));
        }
        drop(out);
        // Warm-up: first values of every tag, connections open.
        let warm = Instant::now() + Duration::from_secs(2);
        while Instant::now() < warm {
            if tokio::time::timeout(Duration::from_millis(50), rx.recv())
                .await
                .is_err()
            {
                continue;
            }
        }
        let polls0: u64 = metrics
            .iter()
            .map(|m| m.polls.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        let t0 = Instant::now();
        let c0 = cpu_seconds("/proc/thread-self/stat");
        let p0 = cpu_seconds("/proc/self/stat");
        let end = t0 + Duration::from_secs(secs);
        let (mut good, mut bad) = (0u64, 0u64);
        let mut peak_rss: f64 = 0.0;
        let mut next_rss = Instant::now();
        while Instant::now() < end {
            match tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
                Ok(Some(u)) => {
                    if u.quality == Quality::Good {
                        good += 1;
                    } else {
                        bad += 1;
                    }
                }
                Ok(None) => break,
                Err(_) => {}
            }
            if Instant::now() >= next_rss {
                peak_rss = peak_rss.max(rss_mb());
                next_rss = Instant::now() + Duration::from_millis(500);
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let c1 = cpu_seconds("/proc/thread-self/stat");
        let p1 = cpu_seconds("/proc/self/stat");
        let polls1: u64 = metrics
            .iter()
            .map(|m| m.polls.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        shutdown.cancel();
        for t in tasks {
            let _ = t.await;
        }
        (
            good,
            bad,
            elapsed,
            c1 - c0,
            p1 - p0,
            peak_rss.max(rss_mb()),
            polls1 - polls0,
        )
    });
    stop_sims.cancel();

    let rate = good as f64 / elapsed;
    println!(
        "acquisition benchmark: {DEVICES} Modbus TCP devices x {TAGS} tags (u16/f32, holes), scan {} ms, {elapsed:.1} s",
        scan_ms()
    );
    println!("  tag values delivered : {good} good ({bad} bad) = {rate:.0} values/s");
    println!(
        "  modbus requests      : {requests} = {:.0} requests/s",
        requests as f64 / elapsed
    );
    println!(
        "  driver thread CPU    : {:.1} % of one core (drivers + consumer, one thread)",
        100.0 * cpu_thread / elapsed
    );
    println!(
        "  process CPU          : {:.1} % (drivers + in-process simulators)",
        100.0 * cpu_proc / elapsed
    );
    println!("  RSS (peak sampled)   : {rss:.1} MB (whole process, simulators included)");
    drop(sims);
}
