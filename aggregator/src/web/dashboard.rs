//! `GET /api/v1/dashboard`: what the dashboard page shows, computed from the operations of the
//! last `window_minutes` (default 60) and the gateways' status. The page polls it every 2 s.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::data;
use crate::api::params::{Bounded, Params};
use crate::api::{ApiError, AppState};

/// Operations read at most per answer (the window's newest beyond it are not counted;
/// `truncated` says so).
const MAX_OPS: i64 = 200_000;
/// Newest events searched for scan rejections.
const REJECT_TAIL: i64 = 200_000;

/// Per unit at a station: (operations, first passed, last failed).
type PerUnit = HashMap<i64, (usize, bool, bool)>;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DashboardQuery {
    /// Minutes back from now (default 60).
    #[param(inline)]
    pub window_minutes: Option<Bounded<1, 10080>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    pub generated_at: String,
    pub window_minutes: u32,
    pub lines: Vec<LineStats>,
    /// `scan_rejected` records in the window (among the newest 200 000 events).
    pub scan_rejects: i64,
    pub gateways: Vec<GatewayStats>,
    pub gateways_online: usize,
    /// Sum of the gateways' reported outbox (buffer) depth.
    pub outbox_depth: i64,
    /// Largest lag (now − newest record) of an online gateway, seconds.
    pub ingest_lag_seconds: Option<f64>,
    /// Operations in the window (≤ 200 000 read).
    pub operations: usize,
    pub truncated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LineStats {
    pub line: String,
    /// Distinct units with an operation in the window.
    pub units: usize,
    pub units_per_hour: f64,
    pub stations: Vec<StationStats>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StationStats {
    pub station: String,
    pub units: usize,
    pub operations: usize,
    /// Units whose first operation at the station in the window passed.
    pub first_pass: usize,
    /// first_pass / units.
    pub first_pass_yield: Option<f64>,
    /// Units with more than one operation at the station (reworked / retried).
    pub reworked: usize,
    /// Units whose last operation at the station failed (scrap candidates).
    pub failed: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayStats {
    pub id: String,
    pub line: String,
    pub state: String,
    pub buffer_depth: i64,
    pub last_record_at: Option<String>,
    pub lag_seconds: Option<f64>,
}

/// The dashboard's numbers: per line units/hour, per station first-pass yield, rework and
/// failures; scan rejects; gateways online, outbox depth, ingest lag.
#[utoipa::path(get, path = "/api/v1/dashboard", tag = "ui", params(DashboardQuery),
    responses((status = 200, body = Dashboard), crate::api::error::BadRequest))]
pub async fn dashboard(
    State(st): State<AppState>,
    Params(q): Params<DashboardQuery>,
) -> Result<Json<Dashboard>, ApiError> {
    let window = q.window_minutes.map_or(60, |b| b.0);
    let now = threadline_shared::time::now();
    let since = now - chrono::Duration::minutes(i64::from(window));
    let ops = data::window_ops(st.reads(), since, MAX_OPS).await?;
    let truncated = ops.len() as i64 >= MAX_OPS;
    // line → station → unit → (operations, first passed, last failed)
    let mut by: BTreeMap<String, BTreeMap<String, PerUnit>> = BTreeMap::new();
    for o in &ops {
        let line = o.line.clone().unwrap_or_else(|| "(no line)".to_owned());
        let u = by
            .entry(line)
            .or_default()
            .entry(o.station.clone())
            .or_default()
            .entry(o.unit_id)
            .or_insert((0, o.result == "pass", false));
        u.0 += 1;
        u.2 = o.result != "pass";
    }
    let hours = f64::from(window) / 60.0;
    let lines = by
        .into_iter()
        .map(|(line, stations)| {
            let mut units = std::collections::HashSet::new();
            let stations = stations
                .into_iter()
                .map(|(station, us)| {
                    units.extend(us.keys().copied());
                    let first_pass = us.values().filter(|u| u.1).count();
                    StationStats {
                        station,
                        units: us.len(),
                        operations: us.values().map(|u| u.0).sum(),
                        first_pass,
                        first_pass_yield: (!us.is_empty())
                            .then(|| first_pass as f64 / us.len() as f64),
                        reworked: us.values().filter(|u| u.0 > 1).count(),
                        failed: us.values().filter(|u| u.2).count(),
                    }
                })
                .collect();
            LineStats {
                line,
                units: units.len(),
                units_per_hour: (units.len() as f64 / hours * 10.0).round() / 10.0,
                stations,
            }
        })
        .collect();
    let scan_rejects = data::scan_rejects(st.reads(), since, REJECT_TAIL).await?;
    let gws = st.reads().gateways().await?;
    let gateways: Vec<GatewayStats> = gws
        .into_iter()
        .map(|g| {
            let lag = g
                .last_record_at
                .as_deref()
                .and_then(|t| threadline_shared::time::parse(t).ok())
                .map(|t| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0));
            GatewayStats {
                id: g.id,
                line: g.line,
                state: g.state,
                buffer_depth: g.buffer_depth,
                last_record_at: g.last_record_at,
                lag_seconds: lag,
            }
        })
        .collect();
    let online: Vec<&GatewayStats> = gateways.iter().filter(|g| g.state == "online").collect();
    Ok(Json(Dashboard {
        generated_at: threadline_shared::time::format(&now),
        window_minutes: window,
        gateways_online: online.len(),
        outbox_depth: gateways.iter().map(|g| g.buffer_depth).sum(),
        ingest_lag_seconds: online.iter().filter_map(|g| g.lag_seconds).reduce(f64::max),
        lines,
        scan_rejects,
        operations: ops.len(),
        truncated,
        gateways,
    }))
}
