//! Routes: per part and version, the operations its units must pass, in order.
//!
//! A version is an event of the aggregator chain (`route_created`). Versions are immutable once
//! used: while no unit of the part has completed an operation since the version was created it
//! may be replaced (`route_replaced`); after that a change needs a new version. Posting the same
//! operations again is idempotent.
//!
//! **The version a unit runs under** is fixed by time, so every operation's route version is
//! determined by the chain alone: the newest version created at or before the unit's first
//! operation (or, for a unit that has none yet or started before any route existed, the newest
//! version). Operations report it as `route_version` in [`RouteStatus`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{Entry, OwnedBind, OwnedSql, RoutingError, UnitHold, append, need};
use crate::store::Db;
use crate::store::sql::{self, Sql};

/// One operation of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteOperation {
    pub station: String,
    pub operation: String,
    /// A required operation must have passed before a unit may go to any later station.
    #[serde(default = "yes")]
    pub required: bool,
    /// Parts whose lots may be consumed here (empty: any).
    #[serde(default)]
    pub materials: Vec<String>,
    /// Equipment allowed here (empty: any).
    #[serde(default)]
    pub equipment: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Body of `POST /api/v1/routes` (and one `[[route]]` of the routes file).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteInput {
    pub part: String,
    pub version: String,
    /// In order.
    #[serde(alias = "operation")]
    pub operations: Vec<RouteOperation>,
}

/// A stored route version.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Route {
    pub part: String,
    pub version: String,
    pub operations: Vec<RouteOperation>,
    pub created_at: String,
    /// The version's event in the aggregator chain.
    pub seq: i64,
}

/// What `POST /api/v1/routes` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteWrite {
    Created,
    Replaced,
    /// The same operations were already stored under this version.
    Unchanged,
}

#[derive(sqlx::FromRow)]
struct RouteRow {
    part: String,
    version: String,
    operations: String,
    #[sqlx(try_from = "sql::Time")]
    created_at: String,
    seq: i64,
}

impl RouteRow {
    fn into_route(self) -> Result<Route, RoutingError> {
        let operations = serde_json::from_str(&self.operations).map_err(|e| {
            RoutingError::Invalid(
                format!(
                    "stored route {} {} is unreadable: {e}",
                    self.part, self.version
                ),
                Value::Null,
            )
        })?;
        Ok(Route {
            part: self.part,
            version: self.version,
            operations,
            created_at: self.created_at,
            seq: self.seq,
        })
    }
}

const ROUTE_SELECT: &str = "SELECT part, version, operations, created_at, seq FROM routes";

fn validate(r: &RouteInput) -> Result<(), RoutingError> {
    need("part", &r.part)?;
    need("version", &r.version)?;
    if r.operations.is_empty() {
        return Err(RoutingError::Invalid(
            "operations must list at least one operation".into(),
            json!({"field": "operations"}),
        ));
    }
    for (i, op) in r.operations.iter().enumerate() {
        need(&format!("operations[{i}].station"), &op.station)?;
        need(&format!("operations[{i}].operation"), &op.operation)?;
        if let Some(j) = r.operations[..i]
            .iter()
            .position(|o| o.station == op.station && o.operation == op.operation)
        {
            return Err(RoutingError::Invalid(
                format!(
                    "operations[{i}] repeats operations[{j}] ({} / {})",
                    op.station, op.operation
                ),
                json!({"field": format!("operations[{i}]")}),
            ));
        }
    }
    Ok(())
}

/// One version of `part`.
pub async fn get_route(db: &Db, part: &str, version: &str) -> Result<Route, RoutingError> {
    let row: Option<RouteRow> = db
        .fetch_optional(
            Sql::new(format!("{ROUTE_SELECT} WHERE part = $1 AND version = $2"))
                .bind(part)
                .bind(version),
        )
        .await?;
    row.ok_or_else(|| RoutingError::NotFound {
        what: "route",
        id: format!("{part} {version}"),
    })?
    .into_route()
}

/// Every version of `part`, oldest first (the last is current).
pub async fn routes_of(db: &Db, part: &str) -> Result<Vec<Route>, RoutingError> {
    let rows: Vec<RouteRow> = db
        .fetch_all(Sql::new(format!("{ROUTE_SELECT} WHERE part = $1 ORDER BY seq")).bind(part))
        .await?;
    rows.into_iter().map(RouteRow::into_route).collect()
}

/// True when a unit of `part` completed an operation at or after `since`.
async fn used_since(db: &Db, part: &str, since: DateTime<Utc>) -> Result<bool, RoutingError> {
    #[derive(sqlx::FromRow)]
    struct One {
        #[allow(dead_code)]
        id: i64,
    }
    let r: Option<One> = db
        .fetch_optional(
            Sql::new(
                "SELECT o.id FROM operations o JOIN items i ON i.id = o.unit_id \
                 WHERE i.kind = 'unit' AND i.part = $1 AND o.completed_at >= $2 LIMIT 1",
            )
            .bind(part)
            .bind(since),
        )
        .await?;
    Ok(r.is_some())
}

/// Stores a route version (see the module doc for when a version may change).
pub async fn put_route(db: &Db, r: &RouteInput) -> Result<(Route, RouteWrite), RoutingError> {
    validate(r)?;
    let ops_json = serde_json::to_string(&r.operations).expect("operations serialize");
    let existing = match get_route(db, &r.part, &r.version).await {
        Ok(e) => Some(e),
        Err(RoutingError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let write = match &existing {
        Some(e) if e.operations == r.operations => return Ok((e.clone(), RouteWrite::Unchanged)),
        Some(e) => {
            let created = threadline_shared::time::parse(&e.created_at)
                .map_err(|err| RoutingError::Invalid(err.to_string(), Value::Null))?;
            if used_since(db, &r.part, created).await? {
                return Err(RoutingError::Conflict(
                    format!(
                        "route {} version {} is in use (units have run on it) and cannot change; \
                         post a new version",
                        r.part, r.version
                    ),
                    json!({"part": r.part, "version": r.version}),
                ));
            }
            RouteWrite::Replaced
        }
        None => RouteWrite::Created,
    };
    let (part, version, ops) = (r.part.clone(), r.version.clone(), ops_json.clone());
    let replace = write == RouteWrite::Replaced;
    let entry = Entry {
        type_: if replace {
            "route_replaced"
        } else {
            "route_created"
        },
        fields: json!({"part": r.part, "version": r.version, "operations": r.operations}),
        project: Box::new(move |seq| {
            let sql = if replace {
                "UPDATE routes SET operations = $3, \
                 created_at = (SELECT ts FROM aggregator_chain WHERE seq = $4), seq = $4 \
                 WHERE part = $1 AND version = $2"
            } else {
                "INSERT INTO routes (part, version, operations, created_at, seq) \
                 SELECT $1, $2, $3, ts, seq FROM aggregator_chain WHERE seq = $4"
            };
            vec![OwnedSql(
                sql,
                vec![
                    OwnedBind::Text(part.clone()),
                    OwnedBind::Text(version.clone()),
                    OwnedBind::Text(ops.clone()),
                    OwnedBind::I64(seq),
                ],
            )]
        }),
    };
    append(db, &[entry]).await?;
    Ok((get_route(db, &r.part, &r.version).await?, write))
}

/// The routes file (`[routing] routes_file`) a plant without ERP keeps next to its config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    #[serde(default)]
    pub route: Vec<RouteInput>,
}

/// Reads and stores every route of `path` at start. A version that conflicts with the stored
/// one (changed after use) refuses the start with the file, part and version.
pub async fn load_routes_file(db: &Db, path: &std::path::Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("[routing] routes_file {}: {e}", path.display()))?;
    let file: RoutesFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut changed = 0;
    for r in &file.route {
        match put_route(db, r).await {
            Ok((_, RouteWrite::Unchanged)) => {}
            Ok((_, w)) => {
                changed += 1;
                tracing::info!(part = %r.part, version = %r.version, what = ?w, "route loaded");
            }
            Err(e) => anyhow::bail!(
                "{}: route {} version {}: {e}",
                path.display(),
                r.part,
                r.version
            ),
        }
    }
    Ok(changed)
}

/// The state of one route operation for a unit.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct OperationStatus {
    pub station: String,
    pub operation: String,
    pub required: bool,
    /// `passed` or `failed` (the latest attempt's result), `missing`, or `wrong_equipment`:
    /// the latest attempt passed on equipment the route operation does not allow.
    pub status: String,
    pub attempts: i64,
    pub last_at: Option<String>,
    /// The equipment of the latest attempt, when it recorded one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equipment: Option<String>,
}

/// Where a unit stands on its route.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct RouteStatus {
    pub serial: String,
    /// False for a serial the aggregator has not seen yet (a unit at its first station).
    pub known: bool,
    pub part: Option<String>,
    /// The route version the unit runs under (null: no route for its part).
    pub route_version: Option<String>,
    pub operations: Vec<OperationStatus>,
    /// Every required operation passed.
    pub complete: bool,
    /// The first required operation not passed yet.
    pub next: Option<OperationStatus>,
    /// Active holds covering the unit.
    pub holds: Vec<UnitHold>,
    /// Its current disposition, if any.
    pub disposition: Option<String>,
    /// With `?station=`: may the unit be worked at that station now?
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    /// Why not (names the missing or failed operation, or the hold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct UnitOp {
    pub station: String,
    pub operation: String,
    pub result: String,
    pub equipment: Option<String>,
    #[sqlx(try_from = "sql::OptTime")]
    pub started_at: Option<String>,
    #[sqlx(try_from = "sql::Time")]
    pub completed_at: String,
}

/// A unit's operations in completion order.
pub(super) async fn unit_ops(db: &Db, serial: &str) -> Result<Vec<UnitOp>, RoutingError> {
    Ok(db
        .fetch_all(
            Sql::new(
                "SELECT o.station, o.operation, o.result, o.equipment, o.started_at, o.completed_at \
                 FROM operations o JOIN items i ON i.id = o.unit_id \
                 WHERE i.kind = 'unit' AND i.ext_id = $1 ORDER BY o.completed_at, o.id",
            )
            .bind(serial),
        )
        .await?)
}

/// The version a unit whose first operation was at `first_op` runs under (module doc).
pub(super) fn version_for<'r>(versions: &'r [Route], first_op: Option<&str>) -> Option<&'r Route> {
    let newest = versions.last();
    let Some(t) = first_op else { return newest };
    versions
        .iter()
        .rev()
        .find(|v| v.created_at.as_str() <= t)
        .or(newest)
}

/// Each route operation's status from the unit's operations (the latest attempt decides).
pub(super) fn statuses(route: &Route, ops: &[UnitOp]) -> Vec<OperationStatus> {
    route
        .operations
        .iter()
        .map(|ro| {
            let tries: Vec<&UnitOp> = ops
                .iter()
                .filter(|o| o.station == ro.station && o.operation == ro.operation)
                .collect();
            let last = tries.last();
            OperationStatus {
                station: ro.station.clone(),
                operation: ro.operation.clone(),
                required: ro.required,
                status: match last {
                    None => "missing".into(),
                    Some(o) if o.result != "pass" => "failed".into(),
                    Some(o) if !equipment_allowed(ro, o.equipment.as_deref()) => {
                        "wrong_equipment".into()
                    }
                    Some(_) => "passed".into(),
                },
                attempts: tries.len() as i64,
                last_at: last.map(|o| o.completed_at.clone()),
                equipment: last.and_then(|o| o.equipment.clone()),
            }
        })
        .collect()
}

/// Whether an operation on `equipment` satisfies route operation `ro` (any equipment when the
/// route lists none; an operation that recorded no equipment does not satisfy a list).
pub(super) fn equipment_allowed(ro: &RouteOperation, equipment: Option<&str>) -> bool {
    ro.equipment.is_empty() || equipment.is_some_and(|e| ro.equipment.iter().any(|a| a == e))
}

/// Where unit `serial` stands on its route; `part` names the part of a unit not seen yet;
/// `station` asks whether it may be worked there now.
pub async fn route_status(
    db: &Db,
    serial: &str,
    part: Option<&str>,
    station: Option<&str>,
) -> Result<RouteStatus, RoutingError> {
    #[derive(sqlx::FromRow)]
    struct U {
        part: Option<String>,
    }
    let unit: Option<U> = db
        .fetch_optional(
            Sql::new("SELECT part FROM items WHERE kind = 'unit' AND ext_id = $1").bind(serial),
        )
        .await?;
    let known = unit.is_some();
    let part = unit
        .and_then(|u| u.part)
        .or_else(|| part.map(str::to_owned));
    let ops = if known {
        unit_ops(db, serial).await?
    } else {
        Vec::new()
    };
    let versions = match &part {
        Some(p) => routes_of(db, p).await?,
        None => Vec::new(),
    };
    let first = ops
        .iter()
        .map(|o| o.started_at.as_deref().unwrap_or(&o.completed_at))
        .min();
    let route = version_for(&versions, first);
    let operations = route.map(|r| statuses(r, &ops)).unwrap_or_default();
    let next = operations
        .iter()
        .find(|o| o.required && o.status != "passed")
        .cloned();
    let holds = if known {
        super::holds_for_unit(db, serial).await?
    } else {
        Vec::new()
    };
    let disposition = if known {
        super::dispositions_for_unit(db, serial)
            .await?
            .pop()
            .map(|d| d.disposition)
    } else {
        None
    };
    let (allowed, reason) = match station {
        None => (None, None),
        Some(st) => {
            let why = refusal(route, &operations, &holds, disposition.as_deref(), st);
            (Some(why.is_none()), why)
        }
    };
    Ok(RouteStatus {
        serial: serial.to_owned(),
        known,
        part,
        route_version: route.map(|r| r.version.clone()),
        complete: route.is_some() && next.is_none(),
        operations,
        next,
        holds,
        disposition,
        allowed,
        reason,
    })
}

/// Why a unit may not be worked at `station` now, or None. The wording is the gateway's
/// `scan_rejected` reason.
fn refusal(
    route: Option<&Route>,
    ops: &[OperationStatus],
    holds: &[UnitHold],
    disposition: Option<&str>,
    station: &str,
) -> Option<String> {
    if let Some(h) = holds.first() {
        return Some(format!(
            "on hold: {} ({} {}, via {})",
            h.hold.reason, h.hold.kind, h.hold.id, h.via
        ));
    }
    if disposition == Some("scrap") {
        return Some("scrapped".into());
    }
    let route = route?;
    let Some(at) = route.operations.iter().position(|o| o.station == station) else {
        return Some(format!(
            "station {station} is not on route {} version {}",
            route.part, route.version
        ));
    };
    ops[..at]
        .iter()
        .find(|o| o.required && o.status != "passed")
        .map(|o| match o.status.as_str() {
            "failed" => format!("failed operation {} at {}", o.operation, o.station),
            "wrong_equipment" => {
                let allowed = route
                    .operations
                    .iter()
                    .find(|r| r.station == o.station && r.operation == o.operation)
                    .map(|r| r.equipment.join(", "))
                    .unwrap_or_default();
                format!(
                    "operation {} at {} ran on {}, not on equipment of route {} version {} ({allowed})",
                    o.operation,
                    o.station,
                    o.equipment.as_deref().unwrap_or("no recorded equipment"),
                    route.part,
                    route.version
                )
            }
            _ => format!("missing operation {} at {}", o.operation, o.station),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(version: &str, created_at: &str) -> Route {
        Route {
            part: "FG".into(),
            version: version.into(),
            operations: ["ST10", "ST20", "ST30"]
                .iter()
                .map(|s| RouteOperation {
                    station: (*s).into(),
                    operation: format!("op-{s}"),
                    required: *s != "ST20",
                    materials: vec![],
                    equipment: vec![],
                })
                .collect(),
            created_at: created_at.into(),
            seq: 1,
        }
    }

    fn op(station: &str, result: &str, at: &str) -> UnitOp {
        UnitOp {
            station: station.into(),
            operation: format!("op-{station}"),
            result: result.into(),
            equipment: None,
            started_at: None,
            completed_at: at.into(),
        }
    }

    #[test]
    fn the_version_in_effect_at_the_first_operation_applies() {
        let v = [
            route("1", "2026-01-01T00:00:00.000000Z"),
            route("2", "2026-02-01T00:00:00.000000Z"),
        ];
        let at = |t| version_for(&v, Some(t)).map(|r| r.version.as_str());
        assert_eq!(at("2026-01-15T00:00:00.000000Z"), Some("1"));
        assert_eq!(at("2026-02-01T00:00:00.000000Z"), Some("2"));
        assert_eq!(
            at("2025-12-01T00:00:00.000000Z"),
            Some("2"),
            "before any route: newest"
        );
        assert_eq!(version_for(&v, None).map(|r| r.version.as_str()), Some("2"));
        assert!(version_for(&[], None).is_none());
    }

    #[test]
    fn the_latest_attempt_decides_and_refusals_name_the_operation() {
        let r = route("1", "2026-01-01T00:00:00.000000Z");
        let ops = [
            op("ST10", "fail", "2026-01-02T00:00:00.000000Z"),
            op("ST10", "pass", "2026-01-02T01:00:00.000000Z"),
        ];
        let s = statuses(&r, &ops);
        assert_eq!(
            s.iter().map(|o| o.status.as_str()).collect::<Vec<_>>(),
            ["passed", "missing", "missing"]
        );
        assert_eq!(s[0].attempts, 2);
        // ST20 is optional: ST30 is allowed after ST10 alone.
        assert_eq!(refusal(Some(&r), &s, &[], None, "ST30"), None);
        let failed = statuses(&r, &ops[..1]);
        assert_eq!(
            refusal(Some(&r), &failed, &[], None, "ST30").as_deref(),
            Some("failed operation op-ST10 at ST10")
        );
        let none = statuses(&r, &[]);
        assert_eq!(
            refusal(Some(&r), &none, &[], None, "ST20").as_deref(),
            Some("missing operation op-ST10 at ST10")
        );
        assert_eq!(refusal(Some(&r), &none, &[], None, "ST10"), None);
        assert_eq!(
            refusal(Some(&r), &none, &[], None, "PK1").as_deref(),
            Some("station PK1 is not on route FG version 1")
        );
        assert_eq!(
            refusal(Some(&r), &s, &[], Some("scrap"), "ST30").as_deref(),
            Some("scrapped")
        );
        assert_eq!(
            refusal(None, &[], &[], None, "ST30"),
            None,
            "no route: no check"
        );
    }

    #[test]
    fn an_operation_passed_on_equipment_the_route_does_not_allow_does_not_count() {
        let mut r = route("1", "2026-01-01T00:00:00.000000Z");
        r.operations[0].equipment = vec!["PRESS-1".into(), "PRESS-2".into()];
        let on = |eq: Option<&str>, result: &str| UnitOp {
            equipment: eq.map(str::to_owned),
            ..op("ST10", result, "2026-01-02T00:00:00.000000Z")
        };
        let ok = statuses(&r, &[on(Some("PRESS-2"), "pass")]);
        assert_eq!(ok[0].status, "passed");
        assert_eq!(ok[0].equipment.as_deref(), Some("PRESS-2"));
        assert_eq!(refusal(Some(&r), &ok, &[], None, "ST30"), None);
        let wrong = statuses(&r, &[on(Some("PRESS-9"), "pass")]);
        assert_eq!(wrong[0].status, "wrong_equipment");
        assert_eq!(
            refusal(Some(&r), &wrong, &[], None, "ST30").as_deref(),
            Some(
                "operation op-ST10 at ST10 ran on PRESS-9, not on equipment of route FG version 1 \
                 (PRESS-1, PRESS-2)"
            )
        );
        let unrecorded = statuses(&r, &[on(None, "pass")]);
        assert_eq!(unrecorded[0].status, "wrong_equipment");
        // A failure stays a failure, whatever it ran on.
        assert_eq!(
            statuses(&r, &[on(Some("PRESS-9"), "fail")])[0].status,
            "failed"
        );
        // Another operation without a list takes any equipment.
        r.operations[0].equipment.clear();
        assert_eq!(
            statuses(&r, &[on(Some("PRESS-9"), "pass")])[0].status,
            "passed"
        );
    }
}
