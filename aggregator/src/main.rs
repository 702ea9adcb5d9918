//! `threadline-aggregator`: ingest, storage and the trace API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use threadline_aggregator::api::{self, AppState};
use threadline_aggregator::config::AggregatorConfig;
use threadline_aggregator::ingest::{self, IngestStats};
use threadline_aggregator::store::{Db, redact};
use threadline_shared::outln;
use tokio_util::sync::CancellationToken;

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
    /// Recompute every gateway's hash chain; exit 1 and name the first broken link if any.
    Verify {
        #[arg(long)]
        config: PathBuf,
    },
    /// Write a new random signing key for a gateway into DIR (`[mqtt] gateway_keys_dir`):
    /// DIR/ID.key, or DIR/ID.key.next when a key exists (a roll-over); mode 0600.
    Keygen {
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print a Mosquitto acl_file confining each gateway user to its own topics.
    BrokerAcl {
        /// Gateway ids (= their broker user names), comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        gateways: Vec<String>,
        /// The aggregator's broker user name.
        #[arg(long, default_value = "threadline-aggregator")]
        aggregator_user: String,
        /// The topic root (`[mqtt] topic_root`).
        #[arg(long, default_value = threadline_shared::topic::DEFAULT_ROOT)]
        root: String,
    },
    /// List or re-ingest the messages and records that could not be stored.
    #[command(name = "dead-letters", subcommand)]
    DeadLetters(DeadLetters),
}

#[derive(Subcommand)]
enum DeadLetters {
    /// One line per dead letter: id, count, first and last arrival, kind, gateway, reason.
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// Decode and store dead letters again (after an upgrade that accepts them). Ones that
    /// store now are removed; the others stay with the new reason. Exit 1 if any still fails.
    Replay {
        #[arg(long)]
        config: PathBuf,
        /// The dead letter to replay (see `list`).
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<i64>,
        /// Replay every dead letter, oldest first.
        #[arg(long)]
        all: bool,
    },
}

fn load(path: &Path) -> Result<AggregatorConfig, ExitCode> {
    AggregatorConfig::load(path).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // rumqttd logs every client disconnect (our readiness probe too) as an error.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "info,rumqttd=warn,rumqttd::router::routing=off",
                    )
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let (path, cmd) = match &cli.command {
        Command::Keygen { gateway, dir } => return keygen(gateway, dir),
        Command::BrokerAcl {
            gateways,
            aggregator_user,
            root,
        } => {
            return match threadline_aggregator::security::broker_acl(
                root,
                aggregator_user,
                gateways,
            ) {
                Ok(acl) => {
                    outln!("{}", acl.trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Run { config } => (config, "run"),
        Command::Check { config } => (config, "check"),
        Command::Verify { config } => (config, "verify"),
        Command::DeadLetters(DeadLetters::List { config }) => (config, "dead-letters list"),
        Command::DeadLetters(DeadLetters::Replay { config, .. }) => (config, "dead-letters replay"),
    };
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cmd == "check" {
        return check(path, &cfg);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = match cmd {
        "verify" => rt.block_on(verify(&cfg)),
        "dead-letters list" => rt.block_on(dead_letters_list(&cfg)),
        "dead-letters replay" => {
            let Command::DeadLetters(DeadLetters::Replay { id, .. }) = &cli.command else {
                unreachable!("matched above")
            };
            rt.block_on(dead_letters_replay(&cfg, *id))
        }
        _ => rt.block_on(run(cfg)).map(|()| ExitCode::SUCCESS),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(gateway: &str, dir: &Path) -> ExitCode {
    match threadline_aggregator::security::keygen(gateway, dir) {
        Ok(k) => {
            let p = k.path.display();
            if k.roll_over {
                outln!(
                    "wrote the roll-over key {p} (mode 0600); the aggregator now accepts both keys."
                );
                outln!(
                    "Next: put its line FIRST in the gateway {gateway}'s signing_key_file (keep the old \
                     line after it), restart the gateway, then move {p} over the .key file \
                     (docs/security.md, \"Key rotation\")."
                );
            } else {
                outln!("wrote {p} (mode 0600).");
                outln!(
                    "Copy it to the gateway {gateway} (e.g. /etc/threadline/signing.key, mode 0600, \
                     owned by the gateway's user) and set there: [mqtt] signing_key_file = \
                     \"/etc/threadline/signing.key\". This aggregator reads it from \
                     [mqtt] gateway_keys_dir = {:?}.",
                    dir.display().to_string()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(path: &Path, cfg: &AggregatorConfig) -> ExitCode {
    // The [mqtt] connection (URL, password and TLS files) was checked when the file loaded.
    let mut problems = Vec::new();
    for t in &cfg.http.token {
        match std::fs::read_to_string(&t.token_file) {
            Ok(s) if s.trim().is_empty() => problems.push(format!(
                "http.token {:?}: token_file {} is empty",
                t.name,
                t.token_file.display()
            )),
            Ok(_) => {}
            Err(e) => problems.push(format!(
                "http.token {:?}: cannot read token_file {}: {e}",
                t.name,
                t.token_file.display()
            )),
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{}: {p}", path.display());
        }
        return ExitCode::from(2);
    }
    let connection = cfg
        .mqtt
        .client()
        .map(ToString::to_string)
        .unwrap_or_default();
    let broker = if cfg.mqtt.embedded {
        let auth = match cfg.mqtt.broker_auth() {
            Ok(ingest::broker_auth::BrokerAuth::Users(u)) => format!(
                "{} users of {}",
                u.len(),
                cfg.mqtt
                    .broker_password_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            Ok(ingest::broker_auth::BrokerAuth::Anonymous) => {
                "anonymous clients allowed".to_owned()
            }
            Err(e) => e,
        };
        format!(
            "embedded rumqttd on {} ({auth}); ingest connects to {connection}",
            cfg.mqtt.listen
        )
    } else {
        format!("external {connection}")
    };
    outln!("{}: OK", path.display());
    outln!("  aggregator: {}", cfg.aggregator.id);
    outln!(
        "  database:   {} ({})",
        if cfg.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        },
        redact(&cfg.database.url)
    );
    outln!(
        "  broker:     {broker}, topic root {:?}{}",
        cfg.mqtt.topic_root,
        cfg.mqtt
            .shared_group
            .as_deref()
            .map(|g| format!(", shared group {g:?}"))
            .unwrap_or_default()
    );
    outln!(
        "  batches:    up to {} records or {} ms; payloads up to {} KiB",
        cfg.aggregator.batch_max_records,
        cfg.aggregator.batch_max_wait_ms,
        cfg.aggregator.max_payload_kb
    );
    let sqlite = cfg.database.url.starts_with("sqlite:");
    outln!(
        "  writers:    {}{}",
        if sqlite { 1 } else { cfg.writers() },
        if sqlite {
            " (SQLite: one write transaction at a time)"
        } else {
            " (gateways spread over them by id)"
        }
    );
    outln!(
        "  retention:  {}",
        match cfg.database.readings_retention_days {
            Some(d) => format!("readings older than {d} days removed hourly; trace events kept"),
            None => "readings and trace events kept forever".to_owned(),
        }
    );
    outln!("  http:       {}", cfg.http.listen);
    outln!(
        "  tokens:     {}",
        if cfg.http.token.is_empty() {
            "none (no authentication)".to_owned()
        } else {
            cfg.http.token.len().to_string()
        }
    );
    ExitCode::SUCCESS
}

async fn verify(cfg: &AggregatorConfig) -> anyhow::Result<ExitCode> {
    let db = Db::connect(&cfg.database.url, cfg.database.max_connections).await?;
    let report = db.verify_chains().await.context("reading the event log")?;
    if report.ok {
        outln!(
            "OK: {} events in {} gateway chains verified",
            report.events,
            report.gateways
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "BROKEN: {} of {} gateway chains ({} events checked)",
        report.broken.len(),
        report.gateways,
        report.events
    );
    for b in &report.broken {
        outln!(
            "  gateway {} event id {} (epoch {}, seq {}): {} mismatch, expected {} stored {}",
            b.gateway,
            b.event_id,
            b.epoch,
            b.seq,
            b.problem,
            b.expected,
            b.stored
        );
    }
    Ok(ExitCode::from(1))
}

async fn dead_letters_list(cfg: &AggregatorConfig) -> anyhow::Result<ExitCode> {
    let db = Db::connect(&cfg.database.url, 2).await?;
    let rows = db
        .dead_letters(None)
        .await
        .context("reading dead letters")?;
    if rows.is_empty() {
        outln!("no dead letters");
        return Ok(ExitCode::SUCCESS);
    }
    outln!("id\tcount\tfirst\tlast\tkind\tgateway\treason");
    for d in &rows {
        outln!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            d.id,
            d.count,
            d.received_at.as_deref().unwrap_or("-"),
            d.last_received_at.as_deref().unwrap_or("-"),
            d.kind,
            d.gateway.as_deref().unwrap_or("-"),
            d.reason.replace(['\n', '\t'], " ")
        );
    }
    outln!("{} dead letters", rows.len());
    Ok(ExitCode::SUCCESS)
}

async fn dead_letters_replay(cfg: &AggregatorConfig, id: Option<i64>) -> anyhow::Result<ExitCode> {
    use threadline_aggregator::store::dead_letters::Replayed;
    let db = Db::connect(&cfg.database.url, 2).await?;
    let rows = db.dead_letters(id).await.context("reading dead letters")?;
    if let (Some(id), true) = (id, rows.is_empty()) {
        eprintln!("no dead letter with id {id}");
        return Ok(ExitCode::from(2));
    }
    let max_payload = cfg.aggregator.max_payload_kb * 1024;
    let (mut stored, mut failing) = (0, 0);
    for d in &rows {
        match db
            .replay_dead_letter(d, &cfg.mqtt.topic_root, max_payload)
            .await
            .with_context(|| format!("replaying dead letter {}", d.id))?
        {
            Replayed::Stored => {
                stored += 1;
                outln!("{}: stored (removed from dead letters)", d.id);
            }
            Replayed::StillFailing(why) => {
                failing += 1;
                outln!("{}: still fails: {why}", d.id);
            }
        }
    }
    outln!(
        "replayed {}: {stored} stored, {failing} still failing",
        rows.len()
    );
    Ok(if failing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run(cfg: AggregatorConfig) -> anyhow::Result<()> {
    // Token files are read first: a missing one refuses the start before anything listens.
    let tokens = Arc::new(
        api::auth::Tokens::load(&cfg.http.token)
            .context("loading [[http.token]] token files")?
            .with_tls(cfg.http.tls_cert_file.is_some()),
    );
    let cancel = CancellationToken::new();
    // Refuse bad MQTT settings (unreadable password/CA files) before anything starts.
    ingest::mqtt::options(&cfg)?;
    let http_addr: std::net::SocketAddr = cfg.http.listen.parse().context("http.listen")?;
    // Bind before anything else starts: a busy port is reported at once.
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen on http.listen {http_addr}"))?;
    let db = Db::connect(&cfg.database.url, cfg.database.max_connections).await?;
    tracing::info!(
        backend = db.backend(),
        "database ready (migrations applied)"
    );
    if let Some(f) = &cfg.routing.routes_file {
        let n = threadline_aggregator::routing::routes::load_routes_file(&db, f).await?;
        tracing::info!(file = %f.display(), changed = n, "routes file loaded");
    }
    if cfg.mqtt.embedded {
        let listen = cfg.mqtt.listen.parse().context("mqtt.listen")?;
        let auth = cfg
            .mqtt
            .broker_auth()
            .map_err(|e| anyhow::anyhow!("[mqtt] {e}"))?;
        ingest::broker::start_embedded(
            listen,
            ingest::mqtt::packet_limit(cfg.aggregator.max_payload_kb),
            auth,
        )?;
        tracing::info!(%listen, "embedded MQTT broker listening");
    }
    let stats = Arc::new(IngestStats::default());
    stats.configure_gaps(cfg.aggregator.gap_alarm_s, cfg.mqtt.shared_group.is_none());
    let ingest_task = {
        let (cfg, db, stats, cancel) = (cfg.clone(), db.clone(), stats.clone(), cancel.clone());
        tokio::spawn(async move {
            let r = ingest::run(&cfg, db, stats, cancel.clone()).await;
            // Without ingest the process must not look alive: stop the server too.
            cancel.cancel();
            r
        })
    };
    if let Some(days) = cfg.database.readings_retention_days {
        tokio::spawn(retention_loop(db.clone(), days, cancel.clone()));
    }
    if cfg.database.factor_index {
        tokio::spawn(threadline_aggregator::analytics::factor_index::run(
            db.clone(),
            cancel.clone(),
        ));
    } else {
        threadline_aggregator::analytics::factor_index::clear(&db)
            .await
            .context("emptying the factor index ([database] factor_index = false)")?;
    }
    // Queries on a pool of their own, with a statement timeout: none can starve ingest.
    let query_db = Db::connect_queries(
        &cfg.database.url,
        cfg.database.max_connections.div_ceil(2),
        cfg.http.query_timeout_ms,
    )
    .await?;
    let mut state = AppState::new(query_db, stats.clone(), tokens);
    if let Some(read_url) = &cfg.database.read_url {
        // No migrations there: a replica follows the primary's schema.
        let replica = Db::connect_queries(
            read_url,
            cfg.database.max_connections.div_ceil(2),
            cfg.http.query_timeout_ms,
        )
        .await
        .context("database.read_url")?;
        tracing::info!(
            replica = %redact(read_url),
            "query side reads from the replica"
        );
        state = state.with_replica(replica);
    }
    let app = api::router(state).layer(axum::Extension(api::epcis::EpcisIds(std::sync::Arc::new(
        threadline_aggregator::epcis::Ids::new(&cfg.epcis.id_base),
    ))));
    let tls = cfg
        .http
        .tls()
        .transpose()
        .map_err(|e| anyhow::anyhow!("[http] {e}"))?;
    tracing::info!(
        %http_addr,
        scheme = if tls.is_some() { "https" } else { "http" },
        "HTTP API listening"
    );
    let shutdown = cancel.clone();
    tokio::spawn(async move {
        let signal = threadline_shared::signal::wait_for_signal().await;
        tracing::info!(signal, "shutting down");
        shutdown.cancel();
    });
    let server_cancel = cancel.clone();
    match tls {
        Some(tls) => axum::serve(api::tls::TlsListener::new(listener, tls)?, app)
            .with_graceful_shutdown(async move { server_cancel.cancelled().await })
            .await
            .context("HTTPS server")?,
        None => axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_cancel.cancelled().await })
            .await
            .context("HTTP server")?,
    }
    cancel.cancel();
    match ingest_task.await {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("ingest task failed: {e}")),
    }
}

/// Applies readings retention at start and then every hour, until `cancel`. A failed pass is
/// logged and tried again at the next one.
async fn retention_loop(db: Db, days: u32, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match db.apply_readings_retention(days).await {
            Ok(r) => tracing::info!(
                days,
                partitions_dropped = r.partitions_dropped.len(),
                rows_deleted = r.rows_deleted,
                "readings retention applied"
            ),
            Err(e) => {
                tracing::warn!(error = %e, days, "readings retention failed; next try in an hour")
            }
        }
    }
}
