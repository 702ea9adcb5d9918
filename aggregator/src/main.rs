//! `threadline-aggregator`: ingest, storage and the trace API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use threadline_aggregator::config::AggregatorConfig;

#[derive(Parser)]
#[command(
    name = "threadline-aggregator",
    version,
    about = "Threadline aggregator: MQTT ingest, genealogy store, trace API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingest and the HTTP API.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config and print what would run.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } | Command::Run { config } => {
            match AggregatorConfig::load(&config) {
                Ok(cfg) => {
                    println!(
                        "{}: aggregator {} — OK",
                        config.display(),
                        cfg.aggregator.id
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprint!("{e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
