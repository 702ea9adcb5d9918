//! Floor actions: what the plant simulator *does* to the devices, and their execution.
//!
//! The plant model ([`super::model`]) decides everything up front, deterministically from a
//! seed, and writes it down as lanes of [`FloorAction`]s — one lane per line, because the lines
//! of a plant work in parallel. A [`Floor`] binds the actions to real simulated devices
//! (scanner pseudo-terminals, Modbus register banks, OPC UA nodes); [`run_lanes`] plays the
//! lanes concurrently with their waits, stoppable by a [`CancellationToken`].

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// A value written into a simulated device.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SimValue {
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl SimValue {
    /// The value as a number (bools are 0 / 1).
    pub fn as_f64(&self) -> f64 {
        match self {
            SimValue::Bool(b) => f64::from(u8::from(*b)),
            SimValue::Int(i) => *i as f64,
            SimValue::Float(f) => *f,
        }
    }
}

/// One thing the floor does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FloorAction {
    /// A code typed into a scanner (framing is the scanner's business).
    Scan { scanner: String, code: String },
    /// A PLC tag takes a value (`tag` is the tag name of the gateway configs' tag map).
    SetTag {
        device: String,
        tag: String,
        value: SimValue,
    },
    /// Nothing happens for this long.
    Wait { ms: u64 },
    /// A safe point between units (no half-done cycle): a paused run stops here.
    Checkpoint,
}

impl FloorAction {
    pub fn scan(scanner: &str, code: impl Into<String>) -> FloorAction {
        FloorAction::Scan {
            scanner: scanner.to_owned(),
            code: code.into(),
        }
    }

    pub fn set(device: &str, tag: &str, value: SimValue) -> FloorAction {
        FloorAction::SetTag {
            device: device.to_owned(),
            tag: tag.to_owned(),
            value,
        }
    }
}

/// A sequence of actions played in order; lanes play concurrently.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lane {
    pub name: String,
    pub actions: Vec<FloorAction>,
}

impl Lane {
    pub fn new(name: impl Into<String>) -> Lane {
        Lane {
            name: name.into(),
            actions: Vec::new(),
        }
    }

    pub fn push(&mut self, a: FloorAction) {
        self.actions.push(a);
    }

    pub fn wait(&mut self, ms: u64) {
        if ms > 0 {
            self.actions.push(FloorAction::Wait { ms });
        }
    }

    /// Total time spent waiting, a lower bound of the lane's run time.
    pub fn wait_ms(&self) -> u64 {
        self.actions
            .iter()
            .map(|a| match a {
                FloorAction::Wait { ms } => *ms,
                _ => 0,
            })
            .sum()
    }
}

/// Why an action could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("unknown scanner {0:?}")]
    UnknownScanner(String),
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
    #[error("device {device:?} has no tag {tag:?}")]
    UnknownTag { device: String, tag: String },
    #[error("{0}")]
    Io(String),
}

/// Binds floor actions to devices. Scans and tag writes are quick, non-blocking operations on
/// simulators living in the same process.
pub trait Floor: Send + Sync {
    fn scan(&self, scanner: &str, code: &str) -> Result<(), FloorError>;
    fn set_tag(&self, device: &str, tag: &str, value: &SimValue) -> Result<(), FloorError>;
}

/// Progress of a run, for callers that show it.
pub trait Progress: Send + Sync {
    fn action_done(&self, lane: &str, index: usize, total: usize) {
        let _ = (lane, index, total);
    }
}

impl Progress for () {}

/// Stops and pauses a run. Pausing takes effect at each lane's next [`FloorAction::Checkpoint`]
/// (between units), so that no machine cycle is left half done while, say, a gateway restarts.
#[derive(Clone)]
pub struct Control {
    pub cancel: CancellationToken,
    paused: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// Lanes currently waiting at a checkpoint.
    waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Control {
    fn default() -> Self {
        Control::new(CancellationToken::new())
    }
}

impl Control {
    pub fn new(cancel: CancellationToken) -> Control {
        Control {
            cancel,
            paused: std::sync::Arc::new(tokio::sync::watch::Sender::new(false)),
            waiting: std::sync::Arc::default(),
        }
    }

    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Lanes that have reached a checkpoint and wait there.
    pub fn lanes_waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Returns when not paused (or cancelled).
    async fn gate(&self) {
        let mut rx = self.paused.subscribe();
        if !*rx.borrow_and_update() {
            return;
        }
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::select! {
            _ = rx.wait_for(|p| !*p) => {}
            () = self.cancel.cancelled() => {}
        }
        self.waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Plays every lane concurrently until done or cancelled. Returns `Ok(true)` when every lane ran
/// to the end, `Ok(false)` when cancelled; the first floor error stops all lanes.
pub async fn run_lanes<F: Floor + ?Sized>(
    floor: &F,
    lanes: &[Lane],
    ctl: &Control,
    progress: &dyn Progress,
) -> Result<bool, FloorError> {
    let runs = lanes
        .iter()
        .map(|lane| run_lane(floor, lane, ctl, progress));
    let results = futures::future::join_all(runs).await;
    let mut complete = true;
    for r in results {
        complete &= r?;
    }
    Ok(complete)
}

async fn run_lane<F: Floor + ?Sized>(
    floor: &F,
    lane: &Lane,
    ctl: &Control,
    progress: &dyn Progress,
) -> Result<bool, FloorError> {
    let cancel = &ctl.cancel;
    let total = lane.actions.len();
    for (i, action) in lane.actions.iter().enumerate() {
        if cancel.is_cancelled() {
            return Ok(false);
        }
        match action {
            FloorAction::Scan { scanner, code } => floor.scan(scanner, code)?,
            FloorAction::SetTag { device, tag, value } => floor.set_tag(device, tag, value)?,
            FloorAction::Wait { ms } => {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(false),
                    () = tokio::time::sleep(Duration::from_millis(*ms)) => {}
                }
            }
            FloorAction::Checkpoint => ctl.gate().await,
        }
        progress.action_done(&lane.name, i + 1, total);
    }
    Ok(true)
}

/// A floor that only records what it was told, for tests and dry runs.
#[derive(Debug, Default)]
pub struct RecordingFloor {
    pub log: std::sync::Mutex<Vec<FloorAction>>,
}

impl Floor for RecordingFloor {
    fn scan(&self, scanner: &str, code: &str) -> Result<(), FloorError> {
        if let Ok(mut l) = self.log.lock() {
            l.push(FloorAction::scan(scanner, code));
        }
        Ok(())
    }

    fn set_tag(&self, device: &str, tag: &str, value: &SimValue) -> Result<(), FloorError> {
        if let Ok(mut l) = self.log.lock() {
            l.push(FloorAction::set(device, tag, value.clone()));
        }
        Ok(())
    }
}
