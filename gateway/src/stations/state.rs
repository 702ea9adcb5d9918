//! The stations' persisted context, committed in the outbox with the events it produced.
//!
//! # Invariants
//!
//! - **One transaction.** A station step (one tag update or scan) changes the context and
//!   produces events; both are committed in *one* transaction of `data_dir/outbox.db` (the
//!   row of its `station_state` table, see the `outbox` module), so after a crash at any instant
//!   either both are there or neither. A tag edge whose commit was lost fires again on the
//!   first read after the restart, because its trigger value was not committed either; a
//!   committed edge does not fire twice.
//! - **Complete.** The row always holds a whole context (it is replaced, never patched) and is
//!   written only when the context changed (a scan or a trigger tag changed something), never
//!   for a mere process value.
//! - **Format.** JSON, `{"version":1,"work_order":…,"work_order_part":…,"trigger_values":{tag:
//!   value},"stations":{id:{unit,operator,feeders,container,shipment,pending,completed,
//!   children}}}`; timestamps in the canonical RFC 3339 form.
//! - **Unreadable.** A row that cannot be parsed is copied aside to
//!   `data_dir/station_state.corrupt-<unix ms>.json` and the stations start empty, with an error
//!   log: an unattended gateway keeps running, and the evidence is kept for a human.
//! - **Upgrade.** Gateways before this format kept the context in `data_dir/stations.json`. On
//!   the first start with an outbox that holds no context, that file is read (an unreadable one
//!   is moved aside to `stations.json.corrupt-<unix ms>`), committed to the outbox and then
//!   renamed `stations.json.migrated`; it is never read again (a later start that still finds a
//!   `stations.json` next to a committed context renames it the same way, with a warning).
//!   The context lives and dies with the outbox: an outbox moved aside as corrupt takes it along
//!   (the stations start empty, like a first start; the moved file still holds it).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use threadline_shared::event::{ItemRef, TagValue};
use threadline_shared::time::{Timestamp, rfc3339, rfc3339_opt};

use crate::outbox::Outbox;

/// The file of gateways before the context moved into the outbox.
const LEGACY_FILE: &str = "stations.json";
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

/// A committed context, parsed: what [`StationEngine::new`](super::StationEngine::new) starts
/// from.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedState(pub(crate) Persisted);

impl SavedState {
    /// Parses a context as committed (see the module docs for the format).
    pub fn parse(text: &str) -> Result<SavedState, String> {
        match serde_json::from_str::<Persisted>(text) {
            Ok(p) if p.version == VERSION => Ok(SavedState(p)),
            Ok(p) => Err(format!("unsupported version {}", p.version)),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Persisted {
    /// An empty context of the current version.
    pub(crate) fn empty() -> Persisted {
        Persisted {
            version: VERSION,
            ..Persisted::default()
        }
    }
}

/// The context the stations start from: the one committed in the outbox, or — on the first
/// start after an upgrade — the legacy `stations.json`, committed to the outbox first (see the
/// module docs).
pub async fn load_committed(
    outbox: &Outbox,
    data_dir: &Path,
) -> anyhow::Result<Option<SavedState>> {
    let legacy = data_dir.join(LEGACY_FILE);
    let committed = outbox
        .station_state()
        .await
        .context("reading the station context from the outbox")?;
    let Some(text) = committed else {
        if !legacy.exists() {
            return Ok(None);
        }
        let saved = SavedState(load_legacy(data_dir)?);
        let json = serde_json::to_string(&saved.0).context("serializing the station context")?;
        outbox
            .append_step(&[], Some(&json))
            .await
            .context("committing the station context to the outbox")?;
        // (An unreadable file was moved aside already.)
        if legacy.exists() {
            retire_legacy(&legacy)?;
        }
        tracing::info!(from = %legacy.display(), "station context moved into the outbox");
        return Ok(Some(saved));
    };
    if legacy.exists() {
        tracing::warn!(file = %legacy.display(), "ignoring a stations.json: the outbox holds the station context");
        retire_legacy(&legacy)?;
    }
    match SavedState::parse(&text) {
        Ok(saved) => Ok(Some(saved)),
        Err(why) => {
            let aside = data_dir.join(format!(
                "station_state.corrupt-{}.json",
                chrono::Utc::now().timestamp_millis()
            ));
            std::fs::write(&aside, &text).with_context(|| {
                format!(
                    "copying the unreadable station context to {}",
                    aside.display()
                )
            })?;
            tracing::error!(
                copied_to = %aside.display(), error = %why,
                "station context unreadable; stations start without context"
            );
            Ok(None)
        }
    }
}

/// Renames the legacy file so that it is never read again.
fn retire_legacy(legacy: &Path) -> anyhow::Result<()> {
    let done = legacy.with_extension("json.migrated");
    std::fs::rename(legacy, &done)
        .with_context(|| format!("renaming {} to {}", legacy.display(), done.display()))
}

/// Reads the legacy `dir/stations.json`; a corrupt one is moved aside (empty context).
fn load_legacy(dir: &Path) -> anyhow::Result<Persisted> {
    let path = dir.join(LEGACY_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    match std::str::from_utf8(&bytes)
        .map_err(|e| e.to_string())
        .and_then(SavedState::parse)
    {
        Ok(saved) => Ok(saved.0),
        Err(why) => {
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
            Ok(Persisted::empty())
        }
    }
}
