//! `threadline-datagen`: writes a realistic plant history into an empty aggregator database for
//! benchmarks (see `threadline_simulators::datagen` for what the plant looks like).

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use threadline_shared::outln;
use threadline_simulators::datagen::{Plan, generate};

#[derive(Parser)]
#[command(
    name = "threadline-datagen",
    version,
    about = "Generate a benchmark plant history straight into the aggregator database"
)]
struct Cli {
    /// Database URL: postgres://… or sqlite://… (must hold no plant data; migrations are run)
    #[arg(long)]
    db: String,
    /// Unit items to generate (all BOM levels; 5 per finished product)
    #[arg(long, default_value_t = 1_000_000)]
    units: u64,
    /// Random seed (same seed, same plant)
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let started = Instant::now();
    match generate(
        &cli.db,
        &Plan {
            units: cli.units,
            seed: cli.seed,
        },
    )
    .await
    {
        Ok(w) => {
            let mut rows: Vec<_> = w.rows.iter().collect();
            rows.sort();
            outln!(
                "generated {} products ({} units) in {:.1} s",
                w.products,
                w.products * 5,
                started.elapsed().as_secs_f64()
            );
            for (t, n) in rows {
                outln!("  {t}: {n} rows");
            }
            outln!(
                "big lot: FAST-000000 (reaches {} units)",
                w.products
                    .min(threadline_simulators::datagen::FASTENER_LOT_PRODUCTS)
                    * 5
            );
            if let Ok(layout) = threadline_simulators::datagen::Layout::new(w.products) {
                let b = layout.bad_lot();
                let d = layout.drift_window();
                outln!(
                    "injected: bad lot LOT-L{}-{b:06} (supplier batch SB-{b}, products {}..{}) fails ST30 leak test ~30 %; PRESS-1 (ST10 press.pressure) drifts over products {}..{}",
                    threadline_simulators::datagen::BAD_LEVEL,
                    b * threadline_simulators::datagen::LOT_SIZE,
                    ((b + 1) * threadline_simulators::datagen::LOT_SIZE).min(w.products),
                    d.start,
                    d.end
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("threadline-datagen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
