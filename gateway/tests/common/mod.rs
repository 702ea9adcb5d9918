//! Driver test harness and the conformance check every driver should pass: it emits values, it
//! reports the peer's loss (tags go bad) and recovers by itself, and it stops promptly on
//! shutdown. Protocol-neutral: an OPC UA test implements [`Peer`] for its simulator and calls
//! [`conformance`] the same way.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use threadline_gateway::drivers::config::DeviceConfig;
use threadline_gateway::drivers::{DeviceMetrics, DriverContext, TagUpdate, spawn_device};
use threadline_shared::event::{Quality, TagValue};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Parses one `[[device]]` table body (without the header).
pub fn device(toml_text: &str) -> DeviceConfig {
    toml::from_str(toml_text).expect("test device config")
}

/// A running driver with its output.
pub struct Harness {
    pub rx: mpsc::Receiver<TagUpdate>,
    pub shutdown: CancellationToken,
    pub metrics: Arc<DeviceMetrics>,
    pub task: Option<JoinHandle<()>>,
    /// Last update per tag.
    pub latest: HashMap<String, TagUpdate>,
    /// Every update received, in order.
    pub all: Vec<TagUpdate>,
    _scans: mpsc::Receiver<threadline_gateway::drivers::RawScan>,
    _dir: tempfile::TempDir,
}

pub fn spawn(cfg: &DeviceConfig) -> Harness {
    let (out, rx) = mpsc::channel(4096);
    let (scans, scans_rx) = mpsc::channel(16);
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(DeviceMetrics::default());
    let ctx = DriverContext {
        out,
        scans,
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        data_dir: dir.path().to_owned(),
    };
    let task = spawn_device(cfg, ctx);
    Harness {
        rx,
        shutdown,
        metrics,
        task: Some(task),
        latest: HashMap::new(),
        all: Vec::new(),
        _scans: scans_rx,
        _dir: dir,
    }
}

impl Harness {
    /// Receives updates until `done(latest)` holds; panics with the state after `within`.
    pub async fn wait_until(
        &mut self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&HashMap<String, TagUpdate>) -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !done(&self.latest) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(u)) => {
                    self.latest.insert(u.tag.clone(), u.clone());
                    self.all.push(u);
                }
                Ok(None) => panic!("{what}: driver output closed; latest = {:#?}", self.latest),
                Err(_) => panic!(
                    "{what}: not reached within {within:?}; latest = {:#?}",
                    self.latest
                ),
            }
        }
    }

    /// Waits until `tag`'s latest update satisfies `pred`.
    pub async fn wait_tag(
        &mut self,
        tag: &str,
        within: Duration,
        mut pred: impl FnMut(&TagUpdate) -> bool,
    ) -> TagUpdate {
        let what = format!("tag {tag}");
        self.wait_until(&what, within, |l| l.get(tag).is_some_and(&mut pred))
            .await;
        self.latest[tag].clone()
    }

    /// Waits until every listed tag is good.
    pub async fn all_good(&mut self, tags: &[&str], within: Duration) {
        self.wait_until("all tags good", within, |l| {
            tags.iter()
                .all(|t| l.get(*t).is_some_and(|u| u.quality == Quality::Good))
        })
        .await;
    }

    /// Waits until every listed tag is bad; returns the errors.
    pub async fn all_bad(&mut self, tags: &[&str], within: Duration) -> Vec<String> {
        self.wait_until("all tags bad", within, |l| {
            tags.iter()
                .all(|t| l.get(*t).is_some_and(|u| u.quality == Quality::Bad))
        })
        .await;
        tags.iter()
            .map(|t| self.latest[*t].error.clone().unwrap_or_default())
            .collect()
    }

    /// Cancels and asserts the task ends within `within`.
    pub async fn stop(mut self, within: Duration) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        let t0 = Instant::now();
        tokio::time::timeout(within, task)
            .await
            .unwrap_or_else(|_| panic!("driver did not stop within {within:?}"))
            .expect("driver task panicked");
        assert!(t0.elapsed() <= within);
    }
}

/// The value of a good update.
pub fn value(u: &TagUpdate) -> Option<&TagValue> {
    (u.quality == Quality::Good)
        .then_some(u.value.as_ref())
        .flatten()
}

/// The device behind a driver, as the conformance check needs it.
pub trait Peer {
    /// Makes the device unreachable (process killed, cable pulled).
    async fn kill(&mut self);
    /// Brings it back.
    async fn restart(&mut self);
}

/// Emits values, goes bad when the peer dies, comes back by itself, stops promptly.
pub async fn conformance(cfg: &DeviceConfig, peer: &mut impl Peer) {
    let tags: Vec<String> = cfg.tag.iter().map(|t| t.name.clone()).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let mut h = spawn(cfg);
    h.all_good(&tags, Duration::from_secs(5)).await;
    assert!(h.metrics.polls.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(h.metrics.values.load(std::sync::atomic::Ordering::Relaxed) >= tags.len() as u64);

    peer.kill().await;
    let errors = h.all_bad(&tags, Duration::from_secs(5)).await;
    assert!(
        errors.iter().all(|e| !e.is_empty()),
        "bad without a reason: {errors:?}"
    );
    assert!(h.metrics.errors.load(std::sync::atomic::Ordering::Relaxed) > 0);
    // Once per state change: staying down does not repeat the bad update.
    let before = h.all.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(u) = h.rx.try_recv() {
        h.all.push(u);
    }
    assert_eq!(
        h.all.len(),
        before,
        "bad state repeated: {:#?}",
        &h.all[before..]
    );

    peer.restart().await;
    h.all_good(&tags, Duration::from_secs(5)).await;
    h.stop(Duration::from_secs(1)).await;
}
