//! `threadline-gateway`: the line gateway daemon and its tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use threadline_gateway::config::GatewayConfig;
use threadline_shared::outln;

mod modbus_cli;

#[derive(Parser)]
#[command(
    name = "threadline-gateway",
    version,
    about = "Threadline line gateway: PLCs and scanners in, trace events out over MQTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway daemon.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Test helper: also generate this many synthetic records per second.
        #[arg(long, hide = true)]
        synthetic_rate: Option<u64>,
        /// Test helper: every Nth synthetic record is a trace event (0 = readings only).
        #[arg(long, hide = true, default_value_t = 0)]
        synthetic_event_every: u64,
        /// Test helper: stop generating after this many synthetic records.
        #[arg(long, hide = true)]
        synthetic_total: Option<u64>,
    },
    /// Validate a config; print every device's read plan and the station wiring.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Read raw Modbus registers and print every interpretation
    /// (u16/i16/u32/i32/f32/f64 in ABCD, CDAB, BADC, DCBA).
    Probe(modbus_cli::ProbeArgs),
    /// Inspect the outbox (works while the daemon runs).
    Buffer {
        #[command(subcommand)]
        command: BufferCommand,
    },
}

#[derive(Subcommand)]
enum BufferCommand {
    /// Print depth (readings / events), oldest record age, epoch, bytes and next seq.
    Stats {
        #[arg(long)]
        config: PathBuf,
    },
}

fn load(config: &Path) -> Result<GatewayConfig, ExitCode> {
    GatewayConfig::load(config).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Probe(args) => Ok(modbus_cli::run_probe(args)),
        Command::Check { config } => load(&config).map(|cfg| {
            outln!(
                "{}: gateway {} ({}/{}): {} devices, {} scanners, {} stations — OK",
                config.display(),
                cfg.gateway.id,
                cfg.gateway.plant,
                cfg.gateway.line,
                cfg.device.len(),
                cfg.scanner.len(),
                cfg.station.len()
            );
            if let Ok(client) = cfg.mqtt.client() {
                outln!("broker: {client}, client id {:?}", cfg.client_id());
            }
            if !modbus_cli::print_read_plans(&cfg) {
                return ExitCode::from(2);
            }
            if !cfg.scanner.is_empty() {
                outln!("\nscanners:");
                for line in cfg.scanner_wiring() {
                    outln!("  {line}");
                }
            }
            outln!("\nstations:");
            for line in cfg.station_wiring() {
                outln!("  {line}");
            }
            ExitCode::SUCCESS
        }),
        Command::Run {
            config,
            synthetic_rate,
            synthetic_event_every,
            synthetic_total,
        } => load(&config).and_then(|cfg| {
            let synthetic =
                synthetic_rate.map(|rate_per_s| threadline_gateway::test_support::Synthetic {
                    rate_per_s,
                    event_every: synthetic_event_every,
                    total: synthetic_total,
                });
            run_daemon(cfg, threadline_gateway::runtime::RunOptions { synthetic })
        }),
        Command::Buffer {
            command: BufferCommand::Stats { config },
        } => load(&config).and_then(buffer_stats),
    };
    result.unwrap_or_else(|code| code)
}

fn run_daemon(
    cfg: GatewayConfig,
    opts: threadline_gateway::runtime::RunOptions,
) -> Result<ExitCode, ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio_runtime()?;
    rt.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let signals = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let signal = threadline_shared::signal::wait_for_signal().await;
                tracing::info!(signal, "signal received");
                shutdown.cancel();
            })
        };
        let result = threadline_gateway::runtime::run_with(cfg, shutdown, opts).await;
        signals.abort();
        match result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                tracing::error!("{e:#}");
                Err(ExitCode::FAILURE)
            }
        }
    })
}

fn buffer_stats(cfg: GatewayConfig) -> Result<ExitCode, ExitCode> {
    let rt = tokio_runtime()?;
    let path = cfg.gateway.data_dir.join("outbox.db");
    let stats = rt
        .block_on(threadline_gateway::outbox::read_file_stats(&path))
        .map_err(|e| {
            eprintln!("{e}");
            ExitCode::FAILURE
        })?;
    let age = stats.oldest_ts.map(|ts| {
        let ms = (chrono::Utc::now() - ts).num_milliseconds().max(0);
        format!(
            "{:.1} s ({})",
            ms as f64 / 1000.0,
            threadline_shared::time::format(&ts)
        )
    });
    outln!("outbox:      {}", stats.path.display());
    outln!("epoch:       {}", stats.epoch);
    if let Some(c) = &stats.created {
        outln!("created:     {c}");
    }
    outln!(
        "depth:       {} ({} readings, {} events)",
        stats.readings + stats.events,
        stats.readings,
        stats.events
    );
    outln!("oldest age:  {}", age.as_deref().unwrap_or("- (empty)"));
    outln!(
        "oldest seq:  {}",
        stats.oldest_seq.map_or("-".to_owned(), |s| s.to_string())
    );
    outln!("next seq:    {}", stats.next_seq);
    outln!(
        "bytes:       {} of {} (buffer_max_mb = {}); file {} bytes",
        stats.bytes,
        cfg.gateway.buffer_max_mb * 1024 * 1024,
        cfg.gateway.buffer_max_mb,
        stats.file_bytes
    );
    Ok(ExitCode::SUCCESS)
}
