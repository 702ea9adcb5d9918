//! The few reads the pages need beyond the trace API's: search lookups, lot master data and
//! consumption, recent units, failure flags for graph nodes, SPC points, dashboard rows.
//! Every statement is bounded (an index range or a `LIMIT`), so a page stays fast on a plant of
//! millions of units.

use crate::store::Db;
use crate::store::sql::{self, Sql};
use crate::trace::ItemKind;
use threadline_shared::time::Timestamp;

/// An item found by search.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Hit {
    pub kind: String,
    pub ext_id: String,
    pub part: Option<String>,
}

/// Items whose id is exactly `id`, any kind.
pub async fn exact(db: &Db, id: &str) -> sqlx::Result<Vec<Hit>> {
    db.fetch_all(
        Sql::new(
            "SELECT kind, ext_id, part FROM items WHERE ext_id = $1 AND kind IN ('unit', 'lot', 'container', 'shipment') ORDER BY kind",
        )
        .bind(id),
    )
    .await
}

/// An item of `kind` with id `id`, if it exists.
pub async fn one(db: &Db, kind: ItemKind, id: &str) -> sqlx::Result<Option<Hit>> {
    db.fetch_optional(
        Sql::new("SELECT kind, ext_id, part FROM items WHERE kind = $1 AND ext_id = $2")
            .bind(kind.as_str())
            .bind(id),
    )
    .await
}

/// Up to `limit` items of each kind whose id starts with `prefix` (an index range on
/// `(kind, ext_id)`; the prefix is checked again here whatever the collation).
pub async fn prefixed(db: &Db, prefix: &str, limit: i64) -> sqlx::Result<Vec<Hit>> {
    let upper = format!("{prefix}\u{10FFFF}");
    let mut out = Vec::new();
    for kind in ["unit", "lot", "container", "shipment"] {
        let rows: Vec<Hit> = db
            .fetch_all(
                Sql::new(
                    "SELECT kind, ext_id, part FROM items WHERE kind = $1 AND ext_id >= $2 AND ext_id < $3 \
                     ORDER BY ext_id LIMIT $4",
                )
                .bind(kind)
                .bind(prefix)
                .bind(upper.as_str())
                .bind(limit),
            )
            .await?;
        out.extend(rows.into_iter().filter(|h| h.ext_id.starts_with(prefix)));
    }
    Ok(out)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkOrder {
    pub id: String,
    pub part: Option<String>,
    pub qty: Option<f64>,
    pub line: Option<String>,
}

pub async fn work_order(db: &Db, id: &str) -> sqlx::Result<Option<WorkOrder>> {
    db.fetch_optional(
        Sql::new("SELECT id, part, qty, line FROM work_orders WHERE id = $1").bind(id),
    )
    .await
}

/// Up to `limit` units of a work order.
pub async fn work_order_units(db: &Db, id: &str, limit: i64) -> sqlx::Result<Vec<Hit>> {
    db.fetch_all(
        Sql::new(
            "SELECT kind, ext_id, part FROM items WHERE kind = 'unit' AND work_order = $1 LIMIT $2",
        )
        .bind(id)
        .bind(limit),
    )
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recent {
    pub ext_id: String,
    pub part: Option<String>,
    pub line: Option<String>,
    pub work_order: Option<String>,
}

/// The newest units (by insertion).
pub async fn recent_units(db: &Db, limit: i64) -> sqlx::Result<Vec<Recent>> {
    db.fetch_all(
        Sql::new(
            "SELECT ext_id, part, line, work_order FROM items WHERE kind = 'unit' AND NOT placeholder \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit),
    )
    .await
}

/// A lot's master data.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lot {
    pub id: i64,
    pub ext_id: String,
    pub part: Option<String>,
    pub supplier: Option<String>,
    pub supplier_batch: Option<String>,
    pub qty: Option<f64>,
    pub placeholder: bool,
    #[sqlx(try_from = "sql::Time")]
    pub created_at: String,
    #[sqlx(try_from = "sql::OptTime")]
    pub first_seen_at: Option<String>,
}

pub async fn lot(db: &Db, lot: &str) -> sqlx::Result<Option<Lot>> {
    db.fetch_optional(
        Sql::new(
            "SELECT id, ext_id, part, supplier, supplier_batch, qty, placeholder, created_at, first_seen_at \
             FROM items WHERE kind = 'lot' AND ext_id = $1",
        )
        .bind(lot),
    )
    .await
}

/// Where a lot was consumed: per station, how many links, first and last.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Consumption {
    pub station: Option<String>,
    pub n: i64,
    pub qty: Option<f64>,
    #[sqlx(try_from = "sql::OptTime")]
    pub first_at: Option<String>,
    #[sqlx(try_from = "sql::OptTime")]
    pub last_at: Option<String>,
}

pub async fn consumption(db: &Db, lot_id: i64) -> sqlx::Result<Vec<Consumption>> {
    db.fetch_all(
        Sql::new(
            "SELECT station, COUNT(*) AS n, SUM(qty) AS qty, MIN(valid_from) AS first_at, MAX(valid_from) AS last_at \
             FROM edges WHERE child_id = $1 AND relation IN ('consumed', 'assembled') \
             GROUP BY station ORDER BY MIN(valid_from)",
        )
        .bind(lot_id),
    )
    .await
}

/// Extra facts about an item shown on container and shipment pages.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemFacts {
    pub part: Option<String>,
    pub level: Option<String>,
    pub customer: Option<String>,
    #[sqlx(try_from = "sql::OptTime")]
    pub shipped_at: Option<String>,
    pub placeholder: bool,
}

pub async fn facts(db: &Db, kind: ItemKind, id: &str) -> sqlx::Result<Option<ItemFacts>> {
    db.fetch_optional(
        Sql::new(
            "SELECT part, level, customer, shipped_at, placeholder FROM items WHERE kind = $1 AND ext_id = $2",
        )
        .bind(kind.as_str())
        .bind(id),
    )
    .await
}

#[derive(sqlx::FromRow)]
struct Ext {
    ext_id: String,
}

/// Of the unit serials `ids`, those with a failed operation or a failed quality check.
pub async fn failed_units(db: &Db, ids: &[&str]) -> sqlx::Result<Vec<String>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(200) {
        let mut q = Sql::new("");
        let list: Vec<String> = chunk.iter().map(|id| q.param(*id)).collect();
        q.push(&format!(
            "SELECT i.ext_id FROM items i WHERE i.kind = 'unit' AND i.ext_id IN ({}) AND \
             (EXISTS (SELECT 1 FROM operations o WHERE o.unit_id = i.id AND o.result = 'fail') \
              OR EXISTS (SELECT 1 FROM quality_checks c WHERE c.unit_id = i.id AND c.result <> 'pass'))",
            list.join(", ")
        ));
        let rows: Vec<Ext> = db.fetch_all(q).await?;
        out.extend(rows.into_iter().map(|r| r.ext_id));
    }
    Ok(out)
}

/// One value of a parameter at a station, for the plain chart.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Point {
    pub unit: String,
    #[sqlx(try_from = "sql::Time")]
    pub completed_at: String,
    pub value: Option<f64>,
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    pub in_spec: bool,
}

/// The newest `limit` values of `parameter` at `station`, oldest first.
pub async fn parameter_points(
    db: &Db,
    station: &str,
    parameter: &str,
    limit: i64,
) -> sqlx::Result<Vec<Point>> {
    let mut rows: Vec<Point> = db
        .fetch_all(
            Sql::new(
                "SELECT i.ext_id AS unit, o.completed_at, p.value_num AS value, p.lsl, p.usl, p.in_spec \
                 FROM operations o JOIN operation_parameters p ON p.operation_id = o.id \
                 JOIN items i ON i.id = o.unit_id \
                 WHERE o.station = $1 AND p.name = $2 AND p.value_num IS NOT NULL \
                 ORDER BY o.completed_at DESC LIMIT $3",
            )
            .bind(station)
            .bind(parameter)
            .bind(limit),
        )
        .await?;
    rows.reverse();
    Ok(rows)
}

#[derive(sqlx::FromRow)]
struct StationName {
    station: String,
}

#[derive(sqlx::FromRow)]
struct ParamName {
    name: String,
}

/// Stations and parameter names seen in the newest operations (for the SPC page's pickers).
pub async fn recent_names(db: &Db) -> sqlx::Result<(Vec<String>, Vec<String>)> {
    let st: Vec<StationName> = db
        .fetch_all(Sql::new(
            "SELECT station FROM operations ORDER BY id DESC LIMIT 5000",
        ))
        .await?;
    let pn: Vec<ParamName> = db
        .fetch_all(Sql::new(
            "SELECT p.name FROM operation_parameters p WHERE p.operation_id IN \
             (SELECT id FROM operations ORDER BY id DESC LIMIT 2000)",
        ))
        .await?;
    let mut s: Vec<String> = st.into_iter().map(|r| r.station).collect();
    s.sort_unstable();
    s.dedup();
    let mut p: Vec<String> = pn.into_iter().map(|r| r.name).collect();
    p.sort_unstable();
    p.dedup();
    Ok((s, p))
}

/// One operation in the dashboard's window.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WindowOp {
    pub line: Option<String>,
    pub station: String,
    pub unit_id: i64,
    pub result: String,
}

/// Operations completed at or after `since`, in id order, at most `limit`.
pub async fn window_ops(db: &Db, since: Timestamp, limit: i64) -> sqlx::Result<Vec<WindowOp>> {
    db.fetch_all(
        Sql::new(
            "SELECT i.line, o.station, o.unit_id, o.result FROM operations o JOIN items i ON i.id = o.unit_id \
             WHERE o.completed_at >= $1 ORDER BY o.completed_at, o.id LIMIT $2",
        )
        .bind(since)
        .bind(limit),
    )
    .await
}

#[derive(sqlx::FromRow)]
struct Count {
    n: i64,
}

/// Scan rejections since `since` among the newest `tail` events of the log (the event log
/// is indexed by id, not by type; the tail bounds the read).
pub async fn scan_rejects(db: &Db, since: Timestamp, tail: i64) -> sqlx::Result<i64> {
    let row: Option<Count> = db
        .fetch_optional(
            Sql::new(
                "SELECT COUNT(*) AS n FROM events WHERE id > (SELECT COALESCE(MAX(id), 0) FROM events) - $1 \
                 AND type = 'scan_rejected' AND ts >= $2",
            )
            .bind(tail)
            .bind(since),
        )
        .await?;
    Ok(row.map_or(0, |r| r.n))
}
