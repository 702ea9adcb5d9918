//! `threadline-sim`: the simulated demo plant — Modbus TCP PLCs, pseudo-terminal scanners and
//! the plant model that drives them — without gateways or aggregator.
//!
//! Signals: SIGINT / SIGTERM stop cleanly; SIGUSR1 pauses the plant at the next unit boundary
//! (prints `plant: paused`), SIGUSR2 resumes it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use threadline_shared::outln;
use threadline_simulators::plant::floor::Control;
use threadline_simulators::plant::sims::{SimPlant, StartOptions};
use threadline_simulators::plant::{LoadedPlant, RunOptions, Truth, run_plant};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "threadline-sim",
    version,
    about = "Simulated plant: Modbus TCP PLCs and pty scanners driven by a deterministic plant model that records the ground truth"
)]
struct Cli {
    /// The plant file, e.g. config/demo/plant.toml.
    #[arg(long)]
    config: PathBuf,
    /// Finished units to make (0 = until stopped); overrides `run.units`.
    #[arg(long)]
    units: Option<usize>,
    /// Overrides `plant.seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// Overrides `plant.cycle_ms`.
    #[arg(long)]
    cycle_ms: Option<u64>,
    /// Overrides `plant.settle_ms`.
    #[arg(long)]
    settle_ms: Option<u64>,
    /// Overrides `plant.id_base` (first number of serials, lots, containers …).
    #[arg(long)]
    id_base: Option<u64>,
    /// Where to write the ground truth (JSON); overrides `run.truth`.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Listen on free ports instead of plant.toml's addresses, and do not link scanner paths.
    #[arg(long)]
    any_port: bool,
    /// Write the endpoints (device addresses, scanner pty paths) as JSON here once up.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Do not start the plant before this file exists (devices are up meanwhile).
    #[arg(long)]
    hold_file: Option<PathBuf>,
    /// Exit when all units are made (default: keep the devices up until stopped).
    #[arg(long)]
    exit_when_done: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let plant = match LoadedPlant::load(&cli.config) {
        Ok(p) => p,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("threadline-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, plant)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("threadline-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, plant: LoadedPlant) -> anyhow::Result<()> {
    let mut params = plant.file.plant.clone();
    if let Some(s) = cli.seed {
        params.seed = s;
    }
    if let Some(c) = cli.cycle_ms {
        params.cycle_ms = c;
    }
    if let Some(s) = cli.settle_ms {
        params.settle_ms = s;
    }
    if let Some(b) = cli.id_base {
        params.id_base = b;
    }
    let opts = RunOptions {
        units: cli.units.unwrap_or(plant.file.run.units),
        batch: plant.file.run.batch,
        truth: cli.truth.clone().or_else(|| plant.file.run.truth.clone()),
    };
    let mut sims = SimPlant::start(
        &plant,
        &StartOptions {
            any_port: cli.any_port,
            link_scanners: !cli.any_port,
        },
    )
    .await?;
    let endpoints = sims.endpoints();
    for (id, addr) in &endpoints.devices {
        outln!("device  {id:<16} modbus-tcp://{addr}");
    }
    let links = sims.links().to_vec();
    for (id, pty) in &endpoints.scanners {
        let link = links
            .iter()
            .find(|l| l.file_name().is_some_and(|n| n == id.as_str()))
            .map(|l| format!("  (linked from {})", l.display()))
            .unwrap_or_default();
        outln!("scanner {id:<16} {pty}{link}");
    }
    if let Some(f) = &cli.ready_file {
        let json = serde_json::to_vec_pretty(&endpoints)?;
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, f).with_context(|| format!("writing {}", f.display()))?;
    }

    let ctl = Control::default();
    let cancel = ctl.cancel.clone();
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let sig_ctl = ctl.clone();
    let signals = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => { sig_ctl.cancel.cancel(); break; }
                _ = term.recv() => { sig_ctl.cancel.cancel(); break; }
                _ = usr1.recv() => {
                    sig_ctl.pause();
                    let c = sig_ctl.clone();
                    tokio::spawn(async move {
                        // Report once every lane stands at a unit boundary.
                        while c.is_paused() && c.lanes_waiting() < 2 && !c.cancel.is_cancelled() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if c.is_paused() {
                            outln!("plant: paused");
                        }
                    });
                }
                _ = usr2.recv() => { sig_ctl.resume(); outln!("plant: resumed"); }
            }
        }
    });

    if let Some(h) = &cli.hold_file {
        outln!("plant: holding until {} exists", h.display());
        while !h.exists() {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
    if !cancel.is_cancelled() {
        outln!(
            "plant: running {} (seed {}, cycle {} ms, settle {} ms)",
            if opts.units == 0 {
                "until stopped".to_owned()
            } else {
                format!("{} units", opts.units)
            },
            params.seed,
            params.cycle_ms,
            params.settle_ms
        );
        let mut on_batch = |t: &Truth, next: u64| {
            outln!(
                "plant: {} finished units so far (next id base {next})",
                t.finished_units().count()
            );
        };
        let out = run_plant(params, &opts, &sims, &ctl, &(), &mut on_batch).await?;
        if out.complete {
            outln!(
                "plant: done, {} units{}",
                out.units_made,
                opts.truth
                    .as_ref()
                    .map(|p| format!(", truth in {}", p.display()))
                    .unwrap_or_default()
            );
            if !cli.exit_when_done {
                cancel.cancelled().await;
            }
        }
    }
    cancel.cancel();
    let _ = signals.await;
    sims.stop().await;
    outln!("plant: stopped");
    Ok(())
}
