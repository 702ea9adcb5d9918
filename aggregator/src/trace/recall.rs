//! Recall scope of a material lot: every unit it went into (through every level of assembly),
//! every container holding those units (case, pallet, …), every shipment and customer.
//!
//! Seeds: the lot and the units whose operations list it as a material (in case a lot was only
//! recorded as an operation material, without a genealogy edge). From there one set-based
//! recursive CTE walks child → parent over the edges that are valid now
//! (`include_closed` follows closed ones too, for the widest possible scope). `UNION` (not
//! `UNION ALL`) makes it cycle-safe: a row already produced is not expanded again. The walk
//! reads only the `edges_child_cover` index on PostgreSQL (see docs/query-plans.md).

use serde::Serialize;
use sqlx::Row as _;
use utoipa::ToSchema;

use super::{ItemKind, QueryError, item_id};
use crate::store::Db;

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Recall {
    pub lot: String,
    /// Serials of every unit containing the lot, at any assembly level, sorted.
    pub units: Vec<String>,
    /// Containers (cases, pallets) holding any of those units, sorted.
    pub containers: Vec<String>,
    pub shipments: Vec<RecallShipment>,
    /// Distinct customers, sorted.
    pub customers: Vec<String>,
    pub counts: RecallCounts,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct RecallShipment {
    pub id: String,
    pub customer: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct RecallCounts {
    pub units: usize,
    pub containers: usize,
    pub shipments: usize,
    pub customers: usize,
}

/// The recall scope of `lot`; `NotFound` when no lot has that id.
pub async fn recall(db: &Db, lot: &str, include_closed: bool) -> Result<Recall, QueryError> {
    let Some(lot_id) = item_id(db, ItemKind::Lot, lot).await? else {
        return Err(QueryError::NotFound {
            what: "lot",
            id: lot.to_owned(),
        });
    };
    let valid = if include_closed {
        ""
    } else {
        " AND e.valid_to IS NULL"
    };
    let walk = format!(
        "WITH RECURSIVE up(id) AS ( \
            SELECT CAST($1 AS BIGINT) \
            UNION \
            SELECT o.unit_id FROM operation_materials om JOIN operations o ON o.id = om.operation_id \
             WHERE om.lot_id = $1 \
            UNION \
            SELECT e.parent_id FROM edges e JOIN up ON e.child_id = up.id \
             WHERE e.relation IN ('consumed', 'assembled', 'packed', 'shipped'){valid} \
         )"
    );
    // PostgreSQL: the planner cannot know how far the walk goes; its estimate (millions of rows
    // for a popular lot) would pick a hash join over a sequential scan of `items` and JIT
    // compilation — both far slower than index lookups for any real recall. `OFFSET 0` keeps
    // the item lookup a per-row index probe; `jit = off` is set for this transaction only.
    let sql = match db {
        Db::Postgres(_) => format!(
            "{walk} SELECT i.kind, i.ext_id, i.customer FROM up \
             CROSS JOIN LATERAL (SELECT kind, ext_id, customer FROM items WHERE items.id = up.id OFFSET 0) i \
             WHERE i.kind <> 'lot'"
        ),
        Db::Sqlite(_) => format!(
            "{walk} SELECT i.kind, i.ext_id, i.customer FROM up JOIN items i ON i.id = up.id WHERE i.kind <> 'lot'"
        ),
    };
    let mut units = Vec::new();
    let mut containers = Vec::new();
    let mut shipments = Vec::new();
    let mut customers = std::collections::BTreeSet::new();
    // (kind, ext_id, customer) of every item reached.
    let mut reached: Vec<(String, String, Option<String>)> = Vec::new();
    match db {
        Db::Postgres(p) => {
            let mut tx = p.begin().await?;
            sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
            for r in sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(lot_id)
                .fetch_all(&mut *tx)
                .await?
            {
                reached.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
            }
            tx.commit().await?;
        }
        Db::Sqlite(p) => {
            for r in sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(lot_id)
                .fetch_all(p)
                .await?
            {
                reached.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
            }
        }
    }
    for (kind, ext_id, customer) in reached {
        match kind.as_str() {
            "unit" => units.push(ext_id),
            "container" => containers.push(ext_id),
            "shipment" => {
                if let Some(c) = &customer {
                    customers.insert(c.clone());
                }
                shipments.push(RecallShipment {
                    id: ext_id,
                    customer,
                });
            }
            _ => {}
        }
    }
    // Sorted here, not in SQL: byte order is the same on both backends whatever the collation.
    units.sort_unstable();
    containers.sort_unstable();
    shipments.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let customers: Vec<String> = customers.into_iter().collect();
    let counts = RecallCounts {
        units: units.len(),
        containers: containers.len(),
        shipments: shipments.len(),
        customers: customers.len(),
    };
    Ok(Recall {
        lot: lot.to_owned(),
        units,
        containers,
        shipments,
        customers,
        counts,
    })
}
