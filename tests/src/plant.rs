//! A whole plant under test as separate processes: Mosquitto, a fresh PostgreSQL database behind
//! a proxy, `threadline-aggregator run`, `threadline-sim` and one `threadline-gateway run` per
//! line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use threadline_shared::testing::{Mosquitto, TcpProxy, free_port, url_authority};
use threadline_simulators::plant::Truth;

use crate::api::Api;
use crate::bins::{Bins, binaries, workspace_root};
use crate::database::TestDb;
use crate::process::{Proc, wait_for};
use crate::verify::verify_all;

/// A whole plant under test: Mosquitto, a fresh PostgreSQL database, `threadline-aggregator run`,
/// `threadline-sim` (free ports, holding until told) and one `threadline-gateway run` per line,
/// each a separate process with its log in the test's temporary directory.
pub struct PlantEnv {
    pub dir: tempfile::TempDir,
    pub bins: Bins,
    pub db: TestDb,
    /// The aggregator reaches PostgreSQL through this proxy (to simulate a database outage).
    pub db_proxy: TcpProxy,
    pub broker: Mosquitto,
    pub api: Api,
    pub http_addr: String,
    pub aggregator: Proc,
    pub sim: Proc,
    /// (gateway id, config path, process)
    pub gateways: Vec<(String, PathBuf, Proc)>,
    pub truth_path: PathBuf,
    hold_file: PathBuf,
}

/// How the plant of a test runs.
#[derive(Debug, Clone)]
pub struct PlantRun {
    pub units: usize,
    pub seed: u64,
    pub cycle_ms: u64,
    pub settle_ms: u64,
}

impl Default for PlantRun {
    fn default() -> Self {
        PlantRun {
            units: 20,
            seed: 7,
            cycle_ms: 40,
            settle_ms: 150,
        }
    }
}

impl PlantEnv {
    /// Starts everything (the plant holds until [`PlantEnv::go`]); `None` when PostgreSQL or
    /// Mosquitto is missing (skipped loudly, or a panic under CI=true).
    pub async fn start(run: &PlantRun) -> Result<Option<PlantEnv>> {
        let bins = binaries()?;
        let dir = tempfile::tempdir()?;
        let Some(db) = TestDb::create().await else {
            return Ok(None);
        };
        if !Mosquitto::available() {
            db.drop_db().await;
            return Ok(None);
        }
        let broker = Mosquitto::start_with("max_queued_messages 100000\n").await;
        let db_proxy = TcpProxy::start(url_authority(&db.url, 5432)).await;
        let http_addr = format!("127.0.0.1:{}", free_port());
        let agg_cfg = dir.path().join("aggregator.toml");
        std::fs::write(
            &agg_cfg,
            format!(
                "[aggregator]\nid = \"agg-e2e\"\nbatch_max_wait_ms = 20\n[mqtt]\nurl = \"{}\"\n[database]\nurl = \"{}\"\n[http]\nlisten = \"{http_addr}\"\n\
                 [routing]\nroutes_file = \"{}\"\n",
                broker.url(),
                db_proxy.route(&db.url),
                workspace_root().join("config/demo/routes.toml").display()
            ),
        )?;
        let aggregator = start_aggregator(&bins, dir.path(), &agg_cfg)?;
        let api = Api::new(&http_addr);
        api.wait_healthy(Duration::from_secs(30))
            .await
            .with_context(|| format!("aggregator log:\n{}", aggregator.output()))?;

        let plant_toml = workspace_root().join("config/demo/plant.toml");
        let ready = dir.path().join("ready.json");
        let hold_file = dir.path().join("go");
        let truth_path = dir.path().join("truth.json");
        let args: Vec<String> = vec![
            "--config".into(),
            plant_toml.to_string_lossy().into_owned(),
            "--any-port".into(),
            "--ready-file".into(),
            ready.to_string_lossy().into_owned(),
            "--hold-file".into(),
            hold_file.to_string_lossy().into_owned(),
            "--truth".into(),
            truth_path.to_string_lossy().into_owned(),
            "--units".into(),
            run.units.to_string(),
            "--seed".into(),
            run.seed.to_string(),
            "--cycle-ms".into(),
            run.cycle_ms.to_string(),
            "--settle-ms".into(),
            run.settle_ms.to_string(),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let sim = Proc::start("sim", dir.path(), &bins.sim, &argv)?;
        let endpoints: threadline_simulators::plant::Endpoints =
            wait_for("threadline-sim ready file", Duration::from_secs(30), || {
                let ready = ready.clone();
                async move {
                    let b = std::fs::read(&ready).ok()?;
                    serde_json::from_slice(&b).ok()
                }
            })
            .await
            .with_context(|| format!("sim log:\n{}", sim.output()))?;

        let mut gateways = Vec::new();
        for line in ["line-1", "line-2"] {
            let text =
                std::fs::read_to_string(workspace_root().join(format!("config/demo/{line}.toml")))?;
            let id = format!("gw-{line}");
            let out = threadline_simulators::plant::rewrite_gateway_config(
                &text,
                &endpoints,
                &threadline_simulators::plant::Overrides {
                    mqtt_url: Some(broker.url()),
                    aggregator_url: Some(format!("http://{http_addr}")),
                    data_dir: Some(dir.path().join(&id).to_string_lossy().into_owned()),
                },
            )?;
            let path = dir.path().join(format!("{id}.toml"));
            std::fs::write(&path, out)?;
            let p = start_gateway(&bins, dir.path(), &id, &path)?;
            gateways.push((id, path, p));
        }
        let env = PlantEnv {
            dir,
            bins,
            db,
            db_proxy,
            broker,
            api,
            http_addr,
            aggregator,
            sim,
            gateways,
            truth_path,
            hold_file,
        };
        env.wait_gateways_online().await?;
        Ok(Some(env))
    }

    /// Waits until the aggregator lists every gateway as online.
    pub async fn wait_gateways_online(&self) -> Result<()> {
        let n = self.gateways.len();
        wait_for("every gateway online", Duration::from_secs(30), || async {
            let (_, v) = self.api.get("/api/v1/gateways").await.ok()?;
            let list = v.as_array().or_else(|| v["gateways"].as_array())?;
            let online = list
                .iter()
                .filter(|g| g["state"] == "online" || g["online"] == true)
                .count();
            (online >= n).then_some(())
        })
        .await
        .with_context(|| self.logs())
    }

    /// Lets the plant start.
    pub fn go(&self) -> Result<()> {
        std::fs::write(&self.hold_file, b"go")?;
        Ok(())
    }

    /// Waits until the simulator printed `line` (`plant: done`, `plant: paused`).
    pub async fn wait_sim_says(&self, line: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("threadline-sim to print {line:?}"),
            timeout,
            || async { self.sim.output().contains(line).then_some(()) },
        )
        .await
        .with_context(|| self.logs())
    }

    /// Sends a signal to the simulator (`USR1` pause, `USR2` resume).
    pub fn signal_sim(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.sim.child.id().to_string()])
            .status();
    }

    /// SIGKILLs gateway `i` and starts it again with the same config and outbox.
    pub fn kill_and_restart_gateway(&mut self, i: usize) -> Result<()> {
        let (id, path, p) = &mut self.gateways[i];
        p.kill();
        *p = start_gateway(&self.bins, self.dir.path(), id, path)?;
        Ok(())
    }

    /// SIGKILLs the aggregator and starts it again.
    pub async fn kill_and_restart_aggregator(&mut self) -> Result<()> {
        self.aggregator.kill();
        let cfg = self.dir.path().join("aggregator.toml");
        self.aggregator = start_aggregator(&self.bins, self.dir.path(), &cfg)?;
        self.api.wait_healthy(Duration::from_secs(30)).await
    }

    /// Polls [`verify_all`] until the aggregator agrees with the truth (ingest is asynchronous)
    /// or `timeout`; returns the differences that remain.
    pub async fn converge(&self, truth: &Truth, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let diffs = verify_all(&self.api, truth).await?;
            if diffs.is_empty() || Instant::now() > deadline {
                return Ok(diffs);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (name, out) in [
            ("aggregator", self.aggregator.output()),
            ("sim", self.sim.output()),
        ]
        .into_iter()
        .chain(
            self.gateways
                .iter()
                .map(|(id, _, p)| (id.as_str(), p.output())),
        ) {
            let tail: String = out
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            s.push_str(&format!("----- {name} (last 40 lines)\n{tail}\n"));
        }
        s
    }

    /// `diffs` (from [`PlantEnv::converge`]) as a failure message: the first 25, then every
    /// process's log.
    pub fn diff_report(&self, diffs: &[String]) -> String {
        format!(
            "{} differences from the ground truth, first ones:\n{}\n{}",
            diffs.len(),
            diffs
                .iter()
                .take(25)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            self.logs()
        )
    }

    /// Stops every process and drops the database.
    pub async fn finish(mut self) {
        for (_, _, p) in &mut self.gateways {
            p.kill();
        }
        self.sim.kill();
        self.aggregator.kill();
        self.db.drop_db().await;
    }
}

fn start_aggregator(bins: &Bins, dir: &Path, cfg: &Path) -> Result<Proc> {
    let c = cfg.to_string_lossy().into_owned();
    Proc::start(
        "aggregator",
        dir,
        &bins.aggregator,
        &["run", "--config", &c],
    )
}

fn start_gateway(bins: &Bins, dir: &Path, id: &str, cfg: &Path) -> Result<Proc> {
    let c = cfg.to_string_lossy().into_owned();
    Proc::start(id, dir, &bins.gateway, &["run", "--config", &c])
}
