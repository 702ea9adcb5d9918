//! `threadline-demo`: the whole demo plant in one process on embedded defaults — the aggregator
//! with its embedded MQTT broker (127.0.0.1:18830) and SQLite in `./data/demo/`, the simulated
//! plant (Modbus TCP PLCs and pty scanners on free ports), one gateway per line, and the HTTP API
//! on 127.0.0.1:8080. Ctrl-C stops it cleanly; running it again continues with the same data.
//!
//! The gateways run from `config/demo/line-1.toml` and `line-2.toml`, rewritten at start to
//! `data/demo/gw-line-N.toml` with the simulators' real addresses and pty paths, the broker's URL
//! and a data directory under `data/demo/` (see docs/demo.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use threadline_aggregator::config::AggregatorConfig;
use threadline_gateway::config::GatewayConfig;
use threadline_shared::outln;
use threadline_simulators::plant::floor::Control;
use threadline_simulators::plant::sims::{SimPlant, StartOptions};
use threadline_simulators::plant::{
    LoadedPlant, Overrides, RunOptions, Truth, rewrite_gateway_config, run_plant,
};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "threadline-demo",
    version,
    about = "The whole demo plant on embedded defaults: MQTT broker, SQLite, simulated PLCs and scanners, two line gateways, the trace API"
)]
struct Cli {
    /// Port of the embedded MQTT broker (on 127.0.0.1).
    #[arg(long, default_value_t = 18830)]
    mqtt_port: u16,
    /// Address of the HTTP API and web pages.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Where the database, the gateways' outboxes and the ground truth live.
    #[arg(long, default_value = "data/demo")]
    data_dir: PathBuf,
    /// The demo configs (plant.toml, line-1.toml, line-2.toml).
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Stop after this many seconds (for scripts); default: run until Ctrl-C.
    #[arg(long)]
    duration: Option<u64>,
    /// Finished units to make, then keep serving the API (0 = until stopped).
    #[arg(long, default_value_t = 0)]
    units: usize,
    /// Pause after each machine cycle (ms); overrides plant.toml.
    #[arg(long)]
    cycle_ms: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("threadline-demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("threadline-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// config/demo, from the working directory or, for `cargo run` elsewhere, the source tree.
fn config_dir(cli: &Cli) -> PathBuf {
    if let Some(d) = &cli.config_dir {
        return d.clone();
    }
    let here = PathBuf::from("config/demo");
    if here.join("plant.toml").exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo")
}

/// Fails with the flag to change when something already listens on `addr`.
fn ensure_free(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(l) => {
            drop(l);
            Ok(())
        }
        Err(e) => bail!("{what} cannot listen on {addr}: {e}; choose another with {flag}"),
    }
}

/// `--mqtt-port`'s state file: the id base the next run starts from.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct DemoState {
    next_id_base: u64,
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mqtt_addr: SocketAddr = ([127, 0, 0, 1], cli.mqtt_port).into();
    ensure_free(mqtt_addr, "the embedded MQTT broker", "--mqtt-port")?;
    ensure_free(cli.http, "the HTTP API", "--http")?;
    let cfg_dir = config_dir(&cli);
    let plant =
        LoadedPlant::load(&cfg_dir.join("plant.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating {}", cli.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&cli.data_dir)?;
    let state_path = data_dir.join("plant-state.json");
    let state: DemoState = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();

    let cancel = CancellationToken::new();

    // 1. Aggregator: embedded broker, SQLite, ingest, API.
    let agg_text = format!(
        "[aggregator]\nid = \"agg-demo\"\n[mqtt]\nembedded = true\nlisten = \"{mqtt_addr}\"\n\
         allow_anonymous = true\n\
         [database]\nurl = \"sqlite://{}\"\n[http]\nlisten = \"{}\"\n\
         [routing]\nroutes_file = \"{}\"\n",
        data_dir.join("threadline.db").display(),
        cli.http,
        std::fs::canonicalize(cfg_dir.join("routes.toml"))
            .unwrap_or_else(|_| cfg_dir.join("routes.toml"))
            .display()
    );
    let agg_cfg = AggregatorConfig::parse("demo aggregator", &agg_text)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let aggregator = start_aggregator(agg_cfg, cancel.clone()).await?;

    // 2. The simulated devices, on free ports.
    let mut sims = SimPlant::start(
        &plant,
        &StartOptions {
            any_port: true,
            link_scanners: false,
        },
    )
    .await?;
    let endpoints = sims.endpoints();

    // 3. One gateway per line, pointed at the simulators.
    let mut gateways = Vec::new();
    for (path, cfg) in &plant.gateways {
        let text = std::fs::read_to_string(path)?;
        let out = rewrite_gateway_config(
            &text,
            &endpoints,
            &Overrides {
                mqtt_url: Some(format!("mqtt://{mqtt_addr}")),
                aggregator_url: Some(format!("http://{}", cli.http)),
                data_dir: Some(
                    data_dir
                        .join(&cfg.gateway.id)
                        .to_string_lossy()
                        .into_owned(),
                ),
            },
        )?;
        let file = data_dir.join(format!("{}.toml", cfg.gateway.id));
        std::fs::write(&file, &out)?;
        let gw = GatewayConfig::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
        let token = cancel.child_token();
        let id = gw.gateway.id.clone();
        gateways.push(tokio::spawn(async move {
            if let Err(e) = threadline_gateway::runtime::run(gw, token).await {
                eprintln!("gateway {id}: {e:#}");
            }
        }));
    }

    // 4. The plant, once the gateways have reached the broker.
    let api = format!("http://{}", cli.http);
    wait_gateways_online(&api, plant.gateways.len(), &cancel).await;
    let mut params = plant.file.plant.clone();
    params.id_base = state.next_id_base.max(params.id_base);
    if let Some(c) = cli.cycle_ms {
        params.cycle_ms = c;
    }
    let truth_path = data_dir.join("truth.json");
    let opts = RunOptions {
        units: cli.units,
        batch: 5,
        truth: Some(truth_path.clone()),
    };
    outln!("Threadline demo");
    outln!("  web UI        {api}/   (dashboard {api}/ui/dashboard)");
    outln!("  MQTT broker   mqtt://{mqtt_addr} (embedded)");
    outln!(
        "  database      {}",
        data_dir.join("threadline.db").display()
    );
    outln!(
        "  gateways      {}",
        plant
            .gateways
            .iter()
            .map(|(_, c)| c.gateway.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!("  ground truth  {}", truth_path.display());
    outln!("  API           {api}/api/openapi.json   (stop with Ctrl-C)");
    outln!("  plant running; example queries follow after the first finished units …");

    if let Some(secs) = cli.duration {
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            c.cancel();
        });
    }
    {
        let c = cancel.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            c.cancel();
        });
    }

    let ctl = Control::new(cancel.clone());
    let mut shown = false;
    let mut on_batch = |t: &Truth, next: u64| {
        let st = DemoState { next_id_base: next };
        if let Ok(b) = serde_json::to_vec(&st) {
            let _ = std::fs::write(&state_path, b);
        }
        if !shown {
            shown = true;
            print_examples(&api, t);
        }
    };
    let out = run_plant(params, &opts, &sims, &ctl, &(), &mut on_batch).await;
    match out {
        Ok(o) if o.complete => {
            outln!(
                "plant: {} units made; the API keeps serving (Ctrl-C stops)",
                o.units_made
            );
            cancel.cancelled().await;
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("plant stopped: {e}");
            cancel.cancel();
        }
    }
    outln!("stopping …");
    for g in gateways {
        let _ = tokio::time::timeout(Duration::from_secs(10), g).await;
    }
    sims.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), aggregator).await;
    outln!("stopped; run again to continue with the same data");
    Ok(())
}

fn print_examples(api: &str, t: &Truth) {
    let Some(unit) = t.finished_units().next() else {
        return;
    };
    let lot = unit
        .components
        .first()
        .and_then(|c| t.units.get(&c.serial))
        .and_then(|sa| sa.materials.first())
        .map(|m| m.lot.clone())
        .unwrap_or_default();
    outln!();
    outln!("Example queries (ids from the plant's ground truth):");
    outln!(
        "  unit report     curl -s {api}/api/v1/units/{}",
        unit.serial
    );
    outln!(
        "  backward trace  curl -s '{api}/api/v1/trace/unit/{}?direction=backward'",
        unit.serial
    );
    outln!("  recall          curl -s {api}/api/v1/lots/{lot}/recall");
    outln!(
        "  (in a browser:  {api}/api/v1/units/{}?format=html)",
        unit.serial
    );
    outln!();
}

/// Polls `/api/v1/gateways` until `n` gateways are online (at most 15 s: the plant starts
/// anyway, the gateways buffer what they see).
async fn wait_gateways_online(api: &str, n: usize, cancel: &CancellationToken) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline && !cancel.is_cancelled() {
        if let Ok(r) = client.get(format!("{api}/api/v1/gateways")).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
        {
            let online = v
                .as_array()
                .or_else(|| v["gateways"].as_array())
                .map(|a| {
                    a.iter()
                        .filter(|g| g["state"] == "online" || g["online"] == true)
                        .count()
                })
                .unwrap_or(0);
            if online >= n {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The aggregator's `run`, in-process: database, embedded broker, ingest and the HTTP API.
async fn start_aggregator(
    cfg: AggregatorConfig,
    cancel: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use threadline_aggregator::api::{self, AppState};
    use threadline_aggregator::ingest::{self, IngestStats};
    use threadline_aggregator::store::Db;

    let http: SocketAddr = cfg.http.listen.parse().context("http.listen")?;
    let listener = tokio::net::TcpListener::bind(http).await.with_context(|| {
        format!("the HTTP API cannot listen on {http}; choose another with --http")
    })?;
    let db = Db::connect(&cfg.database.url, cfg.database.max_connections).await?;
    // As `threadline-aggregator run`: the routes file (ST130 enforces the drive's route).
    if let Some(f) = &cfg.routing.routes_file {
        threadline_aggregator::routing::routes::load_routes_file(&db, f).await?;
    }
    let listen: SocketAddr = cfg.mqtt.listen.parse().context("mqtt.listen")?;
    let auth = cfg.mqtt.broker_auth().map_err(|e| anyhow::anyhow!("{e}"))?;
    threadline_aggregator::ingest::broker::start_embedded(
        listen,
        ingest::mqtt::packet_limit(cfg.aggregator.max_payload_kb),
        auth,
    )
    .map_err(|e| anyhow::anyhow!("{e:#}; choose another port with --mqtt-port"))?;
    let stats = Arc::new(IngestStats::default());
    stats.configure_gaps(cfg.aggregator.gap_alarm_s, cfg.mqtt.shared_group.is_none());
    let ingest_task = {
        let (cfg, db, stats, cancel) = (cfg.clone(), db.clone(), stats.clone(), cancel.clone());
        tokio::spawn(async move {
            if let Err(e) = ingest::run(&cfg, db, stats, cancel.clone()).await {
                eprintln!("aggregator ingest stopped: {e:#}");
            }
        })
    };
    // Queries on their own pool with a statement timeout, as `threadline-aggregator run`.
    let query_db = Db::connect_queries(
        &cfg.database.url,
        cfg.database.max_connections.div_ceil(2),
        cfg.http.query_timeout_ms,
    )
    .await?;
    let app = api::router(AppState::new(
        query_db,
        stats,
        Arc::new(api::auth::Tokens::load(&cfg.http.token)?),
    ));
    Ok(tokio::spawn(async move {
        let c = cancel.clone();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { c.cancelled().await })
            .await
        {
            eprintln!("HTTP API stopped: {e}");
        }
        cancel.cancel();
        let _ = ingest_task.await;
    }))
}
