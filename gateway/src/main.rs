//! `threadline-gateway`: the line gateway daemon and its tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use threadline_gateway::config::GatewayConfig;
use threadline_gateway::reload::{Reload, running};
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
    /// Validate a config; print every device's read plan and the station wiring. With
    /// `--against running` (or another config file): what it changes and how a reload
    /// (`kill -HUP`) would apply it.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// `running` (the config the daemon runs now, from `data_dir/running.toml`) or a file.
        #[arg(long, value_name = "running|FILE")]
        against: Option<String>,
    },
    /// Read raw Modbus registers and print every interpretation
    /// (u16/i16/u32/i32/f32/f64 in ABCD, CDAB, BADC, DCBA).
    Probe(modbus_cli::ProbeArgs),
    /// Pin an OPC UA server's certificate: show it (thumbprint, subject, validity), ask, and
    /// copy it to `data_dir/pki/trusted/` (the device then connects at its next attempt).
    OpcuaTrust {
        #[arg(long)]
        config: PathBuf,
        /// The `[[device]]` id.
        #[arg(long)]
        device: String,
        /// Trust without asking (scripts; compare the thumbprint with the PLC's first).
        #[arg(long)]
        yes: bool,
    },
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

fn load_with_text(config: &Path) -> Result<(GatewayConfig, String), ExitCode> {
    GatewayConfig::load_with_text(config).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

/// `check --config NEW --against running|FILE`: the changes and how a reload applies them.
fn check_against(config: &Path, against: &str) -> Result<ExitCode, ExitCode> {
    let (new, new_text) = load_with_text(config)?;
    let (old_text, what) = if against == "running" {
        match running::read(&new.gateway.data_dir) {
            Ok(r) => {
                let what = format!("the running config ({})", r.describe());
                (r.text, what)
            }
            Err(e) => {
                eprintln!("check --against running: {e}");
                return Err(ExitCode::from(2));
            }
        }
    } else {
        match std::fs::read_to_string(against) {
            Ok(text) => (text, against.to_owned()),
            Err(e) => {
                eprintln!("check --against {against}: cannot read the file: {e}");
                return Err(ExitCode::from(2));
            }
        }
    };
    let old = match GatewayConfig::parse(&what, &old_text) {
        Ok(old) => old,
        Err(e) => {
            eprint!("{e}");
            return Err(ExitCode::from(2));
        }
    };
    outln!("{}: valid; changes against {what}:", config.display());
    let plan = threadline_gateway::reload::plan(&old, &old_text, &new, &new_text);
    for line in plan.lines() {
        outln!("  {line}");
    }
    if !plan.is_empty()
        && plan.refused.is_empty()
        && against == "running"
        && let Ok(r) = running::read(&new.gateway.data_dir)
    {
        outln!(
            "apply with: kill -HUP {}   (systemd: systemctl reload threadline-gateway)",
            r.pid
        );
    }
    Ok(ExitCode::SUCCESS)
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
        Command::Check {
            config,
            against: Some(against),
        } => check_against(&config, &against),
        Command::Check {
            config,
            against: None,
        } => load(&config).map(|cfg| {
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
        } => load_with_text(&config).and_then(|(cfg, text)| {
            let synthetic =
                synthetic_rate.map(|rate_per_s| threadline_gateway::test_support::Synthetic {
                    rate_per_s,
                    event_every: synthetic_event_every,
                    total: synthetic_total,
                });
            let current = Reload {
                cfg,
                text,
                source: config.clone(),
            };
            run_daemon(
                current,
                threadline_gateway::runtime::RunOptions { synthetic },
            )
        }),
        Command::Buffer {
            command: BufferCommand::Stats { config },
        } => load(&config).and_then(buffer_stats),
        Command::OpcuaTrust {
            config,
            device,
            yes,
        } => load(&config).and_then(|cfg| opcua_trust(&cfg, &device, yes)),
    };
    result.unwrap_or_else(|code| code)
}

fn opcua_trust(cfg: &GatewayConfig, device: &str, yes: bool) -> Result<ExitCode, ExitCode> {
    use std::io::{BufRead as _, Write as _};
    let rt = tokio_runtime()?;
    let confirm = || {
        if yes {
            return true;
        }
        print!("Trust this certificate for device {device}? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
    };
    let show = |c: &threadline_gateway::drivers::opcua::trust::ServerCert| {
        outln!("server certificate of {} (device {device}):", c.endpoint);
        outln!("  subject:    {}", c.subject);
        outln!("  thumbprint: {} (SHA-1)", c.thumbprint);
        outln!("  valid:      {} to {}", c.not_before, c.not_after);
    };
    let result = rt.block_on(threadline_gateway::drivers::opcua::trust::pin(
        cfg,
        device,
        |c| {
            show(c);
            confirm()
        },
    ));
    match result {
        Ok((c, true)) => {
            outln!("trusted: {}", c.path.display());
            outln!("The gateway uses it at the device's next connect attempt (no restart).");
            Ok(ExitCode::SUCCESS)
        }
        Ok((c, false)) if c.already_trusted => {
            show(&c);
            outln!("already trusted: {}", c.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Ok(_) => {
            eprintln!("not trusted (nothing changed)");
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("opcua-trust: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

fn run_daemon(
    current: Reload,
    opts: threadline_gateway::runtime::RunOptions,
) -> Result<ExitCode, ExitCode> {
    use threadline_gateway::runtime::{Ended, run_reloadable};
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
        let (reload_tx, mut reloads) = tokio::sync::mpsc::channel(4);
        let hangups = tokio::spawn(watch_hangups(current.source.clone(), reload_tx));
        let mut current = current;
        // The config that ran before a restart in place: where the daemon goes back to when
        // the new one cannot start (its health port is taken, …).
        let mut previous: Option<Reload> = None;
        let result = loop {
            match run_reloadable(
                current.clone(),
                shutdown.clone(),
                opts.clone(),
                &mut reloads,
            )
            .await
            {
                Ok(Ended::Stopped) => break Ok(()),
                Ok(Ended::Restart(next)) => {
                    previous = Some(current);
                    current = *next;
                }
                Err(e) => match previous.take() {
                    Some(p) if !shutdown.is_cancelled() => {
                        tracing::error!(
                            "the new config cannot start, going back to the previous one: {e:#}"
                        );
                        current = p;
                    }
                    _ => break Err(e),
                },
            }
        };
        signals.abort();
        hangups.abort();
        match result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                tracing::error!("{e:#}");
                Err(ExitCode::FAILURE)
            }
        }
    })
}

/// SIGHUP: re-reads the config file; a valid one goes to the daemon, an invalid one is refused
/// with every problem (the running config stays).
async fn watch_hangups(file: PathBuf, reloads: tokio::sync::mpsc::Sender<Reload>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP: no live reload");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!(file = %file.display(), "SIGHUP: reading the config again");
            match GatewayConfig::load_with_text(&file) {
                Ok((cfg, text)) => {
                    let reload = Reload {
                        cfg,
                        text,
                        source: file.clone(),
                    };
                    if reloads.send(reload).await.is_err() {
                        return;
                    }
                }
                Err(errors) => tracing::error!(
                    "reload of {} refused, the running config stays: {} problems\n{errors}",
                    file.display(),
                    errors.0.len()
                ),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, reloads);
    }
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
