//! Publishes the active holds retained to `{root}/{plant}/holds` for every plant the aggregator
//! knows gateways of, so stations learn of a hold without asking (and a gateway that restarts
//! gets the current set from the broker at once).
//!
//! Payload: `{"v":1,"chain_seq":…,"holds":[Hold,…]}` — the holds placed directly on lots, units,
//! containers and parts. Coverage (a lot hold reaching the units built from it) is answered by
//! `GET /api/v1/units/{serial}/route-status`; the recall hold places explicit unit holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::ingest::IngestStats;
use crate::store::Db;
use crate::store::sql::Sql;

/// The holds topic of a plant.
pub fn holds_topic(root: &str, plant: &str) -> String {
    format!("{root}/{plant}/holds")
}

/// How often the plant list is re-read even without a hold change (a new plant's gateways).
const REFRESH: Duration = Duration::from_secs(30);

/// Runs until `cancel`: on every hold change, MQTT (re)connect and [`REFRESH`], publishes each
/// plant's retained holds message when it differs from the last one published.
pub async fn run(
    db: Db,
    client: AsyncClient,
    root: String,
    stats: Arc<IngestStats>,
    cancel: CancellationToken,
) {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut was_connected = false;
    loop {
        let connected = stats
            .mqtt_connected
            .load(std::sync::atomic::Ordering::Relaxed);
        if connected && !was_connected {
            // A new session: the broker may have lost retained messages (embedded broker).
            last.clear();
        }
        was_connected = connected;
        if connected {
            match payloads(&db).await {
                Ok(p) => {
                    for (plant, body) in p {
                        if last.get(&plant) == Some(&body) {
                            continue;
                        }
                        let topic = holds_topic(&root, &plant);
                        match client
                            .publish(&topic, QoS::AtLeastOnce, true, body.clone().into_bytes())
                            .await
                        {
                            Ok(()) => {
                                tracing::debug!(%topic, "holds published");
                                last.insert(plant, body);
                            }
                            Err(e) => tracing::warn!(error = %e, %topic, "holds not published"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "holds not read for publishing"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = stats.holds_changed.notified() => {}
            _ = tokio::time::sleep(if connected { REFRESH } else { Duration::from_millis(500) }) => {}
        }
    }
}

/// (plant, payload) for every known plant.
async fn payloads(db: &Db) -> Result<Vec<(String, String)>, super::RoutingError> {
    #[derive(sqlx::FromRow)]
    struct Plant {
        plant: String,
    }
    let plants: Vec<Plant> = db
        .fetch_all(Sql::new(
            "SELECT DISTINCT plant FROM gateways WHERE plant <> '' ORDER BY plant",
        ))
        .await?;
    if plants.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(sqlx::FromRow)]
    struct Head {
        seq: Option<i64>,
    }
    let head: Option<Head> = db
        .fetch_optional(Sql::new("SELECT MAX(seq) AS seq FROM aggregator_chain"))
        .await?;
    let mut holds = super::list_holds(db, false, None, None).await?;
    holds.sort_by_key(|h| h.placed_seq);
    // `chain_seq`: the aggregator chain's head the set was read at (newer = fresher).
    let body = json!({"v": 1, "chain_seq": head.and_then(|h| h.seq).unwrap_or(0), "holds": holds})
        .to_string();
    Ok(plants
        .into_iter()
        .map(|p| (p.plant, body.clone()))
        .collect())
}
