//! Pieces of the scale-out tests: gateways producing a fixed number of synthetic records,
//! aggregators (replicas) on one PostgreSQL database, NATS servers with JetStream and MQTT (one,
//! or a 3-node cluster) on free loopback ports, and the checks that every record of a gateway
//! is stored exactly once and its outbox is empty.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use threadline_shared::testing::{free_port, skip_or_fail};

use crate::bins::Bins;
use crate::database::TestDb;
use crate::process::{Proc, wait_for};

/// Where Debian's nats-server package puts the binary.
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A gateway of the scale-out tests: no devices, `--synthetic-total` records (every 5th a
/// trace event, so the hash chain is exercised), a health listener for its metrics.
pub struct SynthGateway {
    pub id: String,
    pub cfg: PathBuf,
    /// `host:port` of `[health]` (`/metrics`).
    pub health: String,
    pub total: u64,
    pub proc: Proc,
}

impl SynthGateway {
    /// Writes the config (`mqtt` holds the broker lines: `url = "…"` or `urls = [...]`) and
    /// starts `threadline-gateway run` producing `total` records at `rate` per second.
    pub fn start(
        bins: &Bins,
        dir: &Path,
        id: &str,
        mqtt: &str,
        total: u64,
        rate: u64,
    ) -> Result<SynthGateway> {
        let health = format!("127.0.0.1:{}", free_port());
        let cfg = dir.join(format!("{id}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nid = \"{id}\"\nplant = \"plant-s\"\nline = \"{id}\"\n\
                 data_dir = \"{}\"\n\n[mqtt]\n{mqtt}\nkeep_alive_s = 5\nack_timeout_ms = 2000\n\
                 batch_max_records = 100\n\n[health]\nlisten = \"{health}\"\n",
                dir.join(format!("{id}-data")).display()
            ),
        )?;
        let proc = start_synth(bins, dir, id, &cfg, total, rate)?;
        Ok(SynthGateway {
            id: id.to_owned(),
            cfg,
            health,
            total,
            proc,
        })
    }

    /// `threadline-gateway buffer stats`: records still in the outbox.
    pub fn depth(&self, bins: &Bins) -> Result<u64> {
        let out = Command::new(&bins.gateway)
            .args(["buffer", "stats", "--config"])
            .arg(&self.cfg)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("depth:"))
            .and_then(|d| d.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no depth in buffer stats: {text}"))
    }
}

fn start_synth(
    bins: &Bins,
    dir: &Path,
    id: &str,
    cfg: &Path,
    total: u64,
    rate: u64,
) -> Result<Proc> {
    let (cfg, total, rate) = (
        cfg.to_string_lossy().into_owned(),
        total.to_string(),
        rate.to_string(),
    );
    Proc::start(
        id,
        dir,
        &bins.gateway,
        &[
            "run",
            "--config",
            &cfg,
            "--synthetic-rate",
            &rate,
            "--synthetic-event-every",
            "5",
            "--synthetic-total",
            &total,
        ],
    )
}

/// An aggregator of the scale-out tests: its config (`mqtt` holds the `[mqtt]` lines, `extra`
/// more `[aggregator]` lines) on the test's PostgreSQL database, its HTTP address, its process.
pub struct Aggregator {
    pub name: String,
    pub cfg: PathBuf,
    pub http: String,
    pub proc: Proc,
}

impl Aggregator {
    pub fn start(
        bins: &Bins,
        dir: &Path,
        name: &str,
        mqtt: &str,
        extra: &str,
        db: &TestDb,
    ) -> Result<Aggregator> {
        let http = format!("127.0.0.1:{}", free_port());
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[aggregator]\nid = \"{name}\"\nbatch_max_wait_ms = 20\n{extra}\n\n[mqtt]\n{mqtt}\n\
                 keep_alive_s = 5\n\n[database]\nurl = \"{}\"\nmax_connections = 4\n\n\
                 [http]\nlisten = \"{http}\"\n",
                db.url
            ),
        )?;
        let proc = start_aggregator(bins, dir, name, &cfg)?;
        Ok(Aggregator {
            name: name.to_owned(),
            cfg,
            http,
            proc,
        })
    }

    /// SIGKILL, then the same config again (its log continues).
    pub fn kill_and_restart(&mut self, bins: &Bins, dir: &Path) -> Result<()> {
        self.proc.kill();
        self.proc = start_aggregator(bins, dir, &self.name, &self.cfg)?;
        Ok(())
    }

    pub fn api(&self) -> crate::Api {
        crate::Api::new(&self.http)
    }

    /// A metric of `/metrics` (the first line starting with `name` followed by a space).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        metric(&self.http, "/metrics", name).await
    }
}

fn start_aggregator(bins: &Bins, dir: &Path, name: &str, cfg: &Path) -> Result<Proc> {
    let c = cfg.to_string_lossy().into_owned();
    Proc::start(name, dir, &bins.aggregator, &["run", "--config", &c])
}

/// The value of `name` (exactly, then a space) in the Prometheus text at `http://addr{path}`.
pub async fn metric(addr: &str, path: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}{path}"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What the database holds of one gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub events: i64,
    pub readings: i64,
    /// Distinct (epoch, seq) over both.
    pub distinct: i64,
}

/// Counts what the database holds of gateway `gw`.
pub async fn stored(db: &TestDb, gw: &str) -> Result<Stored> {
    let q = |sql: &str| sql.replace("$GW", &format!("'{gw}'"));
    Ok(Stored {
        events: db
            .count(&q("SELECT count(*) FROM events WHERE gateway = $GW"))
            .await?,
        readings: db
            .count(&q("SELECT count(*) FROM readings WHERE gateway = $GW"))
            .await?,
        distinct: db
            .count(&q(
                "SELECT count(*) FROM (SELECT epoch, seq FROM events WHERE gateway = $GW \
                       UNION SELECT epoch, seq FROM readings WHERE gateway = $GW) d",
            ))
            .await?,
    })
}

/// Waits until every gateway's records are all stored (or `timeout`), then checks that each
/// is stored exactly once (`total` distinct seqs, no row twice, one epoch) and that every
/// outbox is empty (every record acked). Returns the problems, one per line.
pub async fn all_stored_once(
    db: &TestDb,
    bins: &Bins,
    gateways: &[SynthGateway],
    timeout: Duration,
) -> Result<Vec<String>> {
    let _ = wait_for("every record stored", timeout, || async {
        for g in gateways {
            let s = stored(db, &g.id).await.ok()?;
            if s.distinct < g.total as i64 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let mut problems = Vec::new();
    for g in gateways {
        let s = stored(db, &g.id).await?;
        let total = g.total as i64;
        if s.distinct != total || s.events + s.readings != total {
            problems.push(format!("{}: {s:?}, expected {total} records once", g.id));
        }
        if s.events != total / 5 {
            problems.push(format!(
                "{}: {} events, expected {}",
                g.id,
                s.events,
                total / 5
            ));
        }
    }
    let epochs = db
        .count("SELECT count(DISTINCT (gateway, epoch)) FROM events")
        .await?;
    if epochs != gateways.len() as i64 {
        problems.push(format!(
            "{epochs} (gateway, epoch) pairs, expected one per gateway"
        ));
    }
    problems.extend(crate::database::duplicates(db).await?);
    for g in gateways {
        let drained = wait_for("outbox drained", Duration::from_secs(30), || async {
            g.depth(bins).ok().filter(|d| *d == 0)
        })
        .await;
        if drained.is_err() {
            problems.push(format!(
                "{}: {} records still in the outbox (never acked)",
                g.id,
                g.depth(bins).unwrap_or(u64::MAX)
            ));
        }
    }
    Ok(problems)
}

/// How many times a nats-server start is tried when a port picked free was taken before it bound.
const PORT_CLASH_ATTEMPTS: u32 = 3;

/// One nats-server with JetStream and MQTT on free loopback ports (a cluster member when
/// started by [`NatsCluster`]); SIGKILLed when dropped.
pub struct Nats {
    pub name: String,
    pub mqtt_port: u16,
    pub monitor_port: u16,
    pub proc: Option<Proc>,
    conf: PathBuf,
    dir: PathBuf,
}

impl Nats {
    /// True when nats-server is installed; otherwise skips loudly (fails under CI=true).
    pub fn available() -> bool {
        if Path::new(NATS_SERVER).exists() {
            return true;
        }
        skip_or_fail(&format!(
            "{NATS_SERVER} not found; install nats-server (apt-get install nats-server) to run \
             this test"
        ));
        false
    }

    /// `mqtt://127.0.0.1:PORT` of its MQTT listener.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.mqtt_port)
    }

    /// Starts one standalone server with JetStream and MQTT and waits until it is ready.
    ///
    /// Ports are picked free and bound by nats-server a moment later; when another process took
    /// one in between (nats-server exits with "address already in use"), it starts again on
    /// fresh ones.
    pub async fn start_single(dir: &Path) -> Result<Nats> {
        let mut last = None;
        for attempt in 1..=PORT_CLASH_ATTEMPTS {
            let home = dir.join(format!("try{attempt}"));
            let mut n = Nats::configure(&home, "n1", None)?;
            n.up()?;
            match n.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return Ok(n),
                Err(e) if n.port_clash() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// nats-server exited because a port it was given was taken.
    fn port_clash(&self) -> bool {
        self.log().contains("address already in use")
    }

    fn configure(dir: &Path, name: &str, cluster: Option<(u16, &[u16])>) -> Result<Nats> {
        let home = dir.join(name);
        std::fs::create_dir_all(&home)?;
        let (client, mqtt_port, monitor_port) = (free_port(), free_port(), free_port());
        // In a cluster the MQTT streams (sessions, messages, retained) are asked for with three
        // replicas: left to itself NATS 2.9.10 made them R2 here, and losing one of their two
        // nodes stalled JetStream (no quorum) — no MQTT client could connect for minutes.
        let replicas = if cluster.is_some() {
            "\n  stream_replicas: 3"
        } else {
            ""
        };
        let mut conf = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor_port}\n\
             jetstream {{\n  store_dir: \"{}\"\n}}\n\
             mqtt {{\n  listen: 127.0.0.1:{mqtt_port}{replicas}\n}}\n",
            home.join("js").display()
        );
        if let Some((port, routes)) = cluster {
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            conf.push_str(&format!(
                "cluster {{\n  name: threadline\n  listen: 127.0.0.1:{port}\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        let path = home.join("nats.conf");
        std::fs::write(&path, conf)?;
        Ok(Nats {
            name: name.to_owned(),
            mqtt_port,
            monitor_port,
            proc: None,
            conf: path,
            dir: dir.to_path_buf(),
        })
    }

    fn up(&mut self) -> Result<()> {
        let conf = self.conf.to_string_lossy().into_owned();
        self.proc = Some(Proc::start(
            &format!("nats-{}", self.name),
            &self.dir,
            Path::new(NATS_SERVER),
            &["-c", &conf],
        )?);
        Ok(())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Ready: `/healthz?js-enabled-only=true` (JetStream up) answers ok and the MQTT listener
    /// accepts connections.
    async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let health = format!("http://127.0.0.1:{}/healthz", self.monitor_port);
        wait_for(&format!("nats {} ready", self.name), timeout, || async {
            if self.log().contains("[FTL]") {
                return Some(Err(anyhow::anyhow!("nats {} exited", self.name)));
            }
            let ok = reqwest::get(&health).await.ok()?.status().is_success();
            let mqtt = tokio::net::TcpStream::connect(("127.0.0.1", self.mqtt_port))
                .await
                .is_ok();
            (ok && mqtt).then_some(Ok(()))
        })
        .await
        .and_then(|r| r)
        .with_context(|| self.log())
    }

    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }
}

/// Three nats-servers clustered on loopback, each with JetStream and MQTT.
pub struct NatsCluster {
    pub nodes: Vec<Nats>,
}

impl NatsCluster {
    ///
    /// Like [`Nats::start_single`], a cluster whose node lost a port to another process in the
    /// moment between picking and binding it starts again on fresh ports.
    pub async fn start(dir: &Path) -> Result<NatsCluster> {
        let mut last = None;
        for attempt in 1..=PORT_CLASH_ATTEMPTS {
            match NatsCluster::try_start(&dir.join(format!("try{attempt}"))).await {
                Ok(cluster) => return Ok(cluster),
                Err((e, true)) => last = Some(e),
                Err((e, false)) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Starts the cluster once; the error says whether a node lost a port.
    async fn try_start(dir: &Path) -> std::result::Result<NatsCluster, (anyhow::Error, bool)> {
        let fatal = |e| (e, false);
        let cluster_ports = [free_port(), free_port(), free_port()];
        let mut nodes = Vec::new();
        for (i, port) in cluster_ports.iter().enumerate() {
            let routes: Vec<u16> = cluster_ports
                .iter()
                .copied()
                .filter(|p| p != port)
                .collect();
            let name = format!("n{}", i + 1);
            nodes.push(
                Nats::configure(dir, &name, Some((*port, routes.as_slice()))).map_err(fatal)?,
            );
        }
        for n in &mut nodes {
            n.up().map_err(fatal)?;
        }
        for n in &nodes {
            if let Err(e) = n.wait_ready(Duration::from_secs(60)).await {
                return Err((e, nodes.iter().any(Nats::port_clash)));
            }
        }
        // JetStream needs a meta leader before MQTT sessions can be made.
        let monitor = nodes[0].monitor_port;
        wait_for(
            "a JetStream meta leader",
            Duration::from_secs(60),
            || async {
                let v: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{monitor}/jsz"))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                v["meta_cluster"]["leader"].as_str().map(|_| ())
            },
        )
        .await
        .with_context(|| nodes.iter().map(Nats::log).collect::<Vec<_>>().join("\n"))
        .map_err(fatal)?;
        Ok(NatsCluster { nodes })
    }

    /// `urls = [...]` of the nodes, in the order `order` gives (indexes).
    pub fn urls(&self, order: &[usize]) -> String {
        let list: Vec<String> = order
            .iter()
            .map(|i| format!("\"{}\"", self.nodes[*i].url()))
            .collect();
        format!("urls = [{}]", list.join(", "))
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("----- nats {}\n{}", n.name, tail(&n.log(), 30)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fails with every process's log tail when `problems` is not empty.
pub fn check(problems: &[String], logs: impl FnOnce() -> String) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    bail!("{}\n{}", problems.join("\n"), logs())
}
