//! The stations' persisted context: `state_dir/stations.json`.
//!
//! Invariants: the file always holds a complete, parseable state — it is replaced atomically
//! (write `stations.json.tmp`, fsync it, rename over `stations.json`, fsync the directory), so a
//! power cut leaves either the old or the new state, never a torn one. It is rewritten whenever
//! the context changes (a scan or a trigger tag changed something), never for a mere process
//! value. Format: JSON, `{"version":1,"work_order":…,"trigger_values":{tag:value},
//! "stations":{id:{unit,operator,feeders,container,shipment,pending,completed,children}}}`;
//! timestamps in the canonical RFC 3339 form. A file that cannot be parsed is moved aside
//! (`stations.json.corrupt-<unix ms>`) and the stations start empty, with an error log: an
//! unattended gateway keeps running, and the evidence is kept for a human.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use threadline_shared::event::{ItemRef, TagValue};
use threadline_shared::time::{Timestamp, rfc3339, rfc3339_opt};

pub(crate) const FILE_NAME: &str = "stations.json";
const VERSION: u32 = 1;

/// Everything that survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Persisted {
    pub version: u32,
    /// The line's current work order (a gateway is one line).
    pub work_order: Option<String>,
    /// Part learned from the work order label, if it carried one.
    pub work_order_part: Option<String>,
    /// Last value of every trigger tag (`complete_on`, `start_on`, `unit_tag`, …), so an edge
    /// that happened while the gateway was down is still seen after the restart.
    #[serde(default)]
    pub trigger_values: BTreeMap<String, TagValue>,
    /// Station id → its context.
    #[serde(default)]
    pub stations: BTreeMap<String, StationState>,
}

/// The context of one station; every field may be absent from the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct StationState {
    /// The unit being worked on.
    pub unit: Option<CurrentUnit>,
    /// The logged-in operator.
    pub operator: Option<String>,
    /// part → loaded lot.
    pub feeders: BTreeMap<String, String>,
    /// pack: the container being filled.
    pub container: Option<OpenContainer>,
    /// ship: the shipment being loaded.
    pub shipment: Option<OpenShipment>,
    /// A code that changes what the next child scan means.
    pub pending: Option<Pending>,
    /// Serials completed here, oldest first, at most `rework_memory`.
    pub completed: VecDeque<String>,
    /// Children bound here to the current unit (for `disassemble_on`).
    pub children: Vec<Child>,
}

/// The unit being worked on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CurrentUnit {
    pub id: String,
    /// When it became current (scan or unit tag).
    #[serde(with = "rfc3339")]
    pub since: Timestamp,
    /// When `start_on` fired for it.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpenContainer {
    pub id: String,
    /// Children packed into it here.
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpenShipment {
    pub id: String,
    pub customer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub(crate) enum Pending {
    Disassemble { reason: String },
    Unpack,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Child {
    pub item: ItemRef,
    pub qty: Option<f64>,
}

/// Reads `dir/stations.json`; a missing file is an empty state, a corrupt one is moved aside.
pub(crate) fn load(dir: &Path) -> anyhow::Result<Persisted> {
    let path = dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Persisted {
                version: VERSION,
                ..Persisted::default()
            });
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    match serde_json::from_slice::<Persisted>(&bytes) {
        Ok(p) if p.version == VERSION => Ok(p),
        outcome => {
            let why = match outcome {
                Ok(p) => format!("unsupported version {}", p.version),
                Err(e) => e.to_string(),
            };
            let aside = path.with_extension(format!(
                "json.corrupt-{}",
                chrono::Utc::now().timestamp_millis()
            ));
            std::fs::rename(&path, &aside)
                .with_context(|| format!("moving unreadable {} aside", path.display()))?;
            tracing::error!(
                file = %path.display(), moved_to = %aside.display(), error = %why,
                "station state unreadable; stations start without context"
            );
            Ok(Persisted {
                version: VERSION,
                ..Persisted::default()
            })
        }
    }
}

/// Writes `bytes` to `dir/stations.json` atomically (tmp + fsync + rename + fsync dir).
pub(crate) fn write_atomic(dir: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let path: PathBuf = dir.join(FILE_NAME);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
