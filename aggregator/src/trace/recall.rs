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
use utoipa::ToSchema;

use super::{ItemKind, QueryError, item_id};
use crate::store::Db;
use crate::store::sql::Sql;

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
    // Each item reached is looked up by id once per row (`Dialect::lookup_join` says why), and
    // PostgreSQL runs the walk without JIT compilation: it cannot know how far the walk goes,
    // and compiling for the millions of rows it guesses costs more than the walk.
    let lookup = db
        .dialect()
        .lookup_join("items", "i", "kind, ext_id, customer", "id", "up.id");
    let q = Sql::new(format!(
        "{walk} SELECT i.kind, i.ext_id, i.customer FROM up {lookup} WHERE i.kind <> 'lot'"
    ))
    .bind(lot_id)
    .without_jit();
    #[derive(sqlx::FromRow)]
    struct Reached {
        kind: String,
        ext_id: String,
        customer: Option<String>,
    }
    let reached: Vec<Reached> = db.fetch_all(q).await?;
    let mut units = Vec::new();
    let mut containers = Vec::new();
    let mut shipments = Vec::new();
    let mut customers = std::collections::BTreeSet::new();
    for Reached {
        kind,
        ext_id,
        customer,
    } in reached
    {
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
