//! `threadline-gateway`: the line gateway daemon and its tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use threadline_gateway::config::GatewayConfig;

mod probe;

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
    },
    /// Validate a config; print every device's read plan and the station wiring.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Read raw Modbus registers and print every interpretation
    /// (u16/i16/u32/i32/f32/f64 in ABCD, CDAB, BADC, DCBA).
    Probe(probe::ProbeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Probe(args) => probe::run_probe(args),
        Command::Check { config } | Command::Run { config } => match GatewayConfig::load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: gateway {} ({}/{}): {} devices, {} scanners, {} stations — OK",
                    config.display(),
                    cfg.gateway.id,
                    cfg.gateway.plant,
                    cfg.gateway.line,
                    cfg.device.len(),
                    cfg.scanner.len(),
                    cfg.station.len()
                );
                if !probe::print_read_plans(&cfg) {
                    return ExitCode::from(2);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
        },
    }
}
