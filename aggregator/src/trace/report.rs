//! The unit report: everything an auditor asks about one serial, in one answer.
//!
//! `materials` are the lots this unit consumed directly; `component_materials` are the lots its
//! sub-assemblies consumed, at every level, each naming the sub-assembly (`via`) it went into.
//! `containers` walk up the packing edges that are valid now (case, then pallet, …); `shipment`
//! is the newest shipment of the unit or of any of those containers.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::QueryError;
use crate::store::Db;
use crate::store::sql::{self, Sql, id_list};

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct UnitReport {
    pub serial: String,
    pub part: Option<String>,
    pub work_order: Option<String>,
    pub line: Option<String>,
    /// True while the unit was only named by trace events, without its own start record.
    pub placeholder: bool,
    /// Lots consumed by this unit directly.
    pub materials: Vec<Material>,
    /// Lots consumed by its sub-assemblies (every level), with the sub-assembly they went into.
    pub component_materials: Vec<ComponentMaterial>,
    /// Child units assembled into this unit (direct children).
    pub components: Vec<Component>,
    pub operations: Vec<Operation>,
    pub quality_checks: Vec<QualityCheck>,
    /// Innermost first: case, then pallet.
    pub containers: Vec<Container>,
    pub shipment: Option<Shipment>,
    /// Active holds covering the unit (on itself, its part, a lot or sub-assembly in it, a
    /// container holding it).
    pub holds: Vec<crate::routing::UnitHold>,
    /// Quality decisions on the unit, oldest first (the last is the current one).
    pub dispositions: Vec<crate::routing::Disposition>,
    /// The suppliers' part of the history: events captured from their EPCIS documents that name
    /// a lot in this unit or its sub-assemblies, oldest first.
    pub supplier_history: Vec<super::supplier::SupplierEvent>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Material {
    pub lot: String,
    pub part: Option<String>,
    pub supplier: Option<String>,
    pub qty: Option<f64>,
    pub station: Option<String>,
    /// Disassembly/removal closed this link (the lot is no longer in the unit).
    pub closed: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, sqlx::FromRow)]
pub struct ComponentMaterial {
    /// The sub-assembly serial that consumed the lot.
    pub via: String,
    pub lot: String,
    pub part: Option<String>,
    pub supplier: Option<String>,
    pub qty: Option<f64>,
    pub station: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Component {
    pub serial: String,
    pub part: Option<String>,
    pub station: Option<String>,
    pub assembled_at: String,
    /// Set when the component was removed again (disassembly).
    pub removed_at: Option<String>,
}

/// One operation on a unit: where, with what and by whom, and how it ended. The unit report
/// lists them with their parameters; the internal trace lists them with their unit.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, sqlx::FromRow)]
pub struct OperationSummary {
    pub id: i64,
    pub station: String,
    pub operation: String,
    pub equipment: Option<String>,
    pub operator: Option<String>,
    pub recipe: Option<String>,
    #[sqlx(try_from = "sql::OptTime")]
    pub started_at: Option<String>,
    #[sqlx(try_from = "sql::Time")]
    pub completed_at: String,
    pub result: String,
    pub defect_code: Option<String>,
    pub out_of_spec: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, sqlx::FromRow)]
pub struct Operation {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub summary: OperationSummary,
    /// Sorted by name.
    #[sqlx(skip)]
    pub parameters: Vec<Parameter>,
    #[sqlx(json)]
    pub environment: Vec<EnvValue>,
}

/// A value as captured: a number (bools as 0/1) or text; `null` when none was. Read from a
/// `value_num` / `value_text` column pair.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(transparent)]
pub struct Captured(pub serde_json::Value);

impl std::ops::Deref for Captured {
    type Target = serde_json::Value;
    fn deref(&self) -> &serde_json::Value {
        &self.0
    }
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for Captured
where
    &'r str: sqlx::ColumnIndex<R>,
    Option<f64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(Captured(value_of(
            row.try_get("value_num")?,
            row.try_get("value_text")?,
        )))
    }
}

/// A process parameter of an operation, against its limits.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, sqlx::FromRow)]
pub struct Parameter {
    pub name: String,
    /// Number or text, as captured.
    #[schema(value_type = Object)]
    #[sqlx(flatten)]
    pub value: Captured,
    pub unit: Option<String>,
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    pub in_spec: bool,
}

/// An ambient value snapshotted with the operation.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema, PartialEq)]
pub struct EnvValue {
    pub name: String,
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    #[serde(default)]
    pub unit: Option<String>,
}

/// An inspected characteristic of the unit.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, sqlx::FromRow)]
pub struct QualityCheck {
    pub characteristic: String,
    #[schema(value_type = Object)]
    #[sqlx(flatten)]
    pub value: Captured,
    /// Unit of measure.
    #[sqlx(rename = "unit_of_measure")]
    pub unit: Option<String>,
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    pub result: String,
    pub station: Option<String>,
    pub operator: Option<String>,
    #[sqlx(try_from = "sql::Time")]
    pub checked_at: String,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Container {
    pub id: String,
    pub level: Option<String>,
}

/// The shipment that took the unit (or a container holding it).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, sqlx::FromRow)]
pub struct Shipment {
    pub id: String,
    pub customer: Option<String>,
    /// The shipment's time, else when the unit was put on it.
    #[sqlx(try_from = "sql::OptTime")]
    pub shipped_at: Option<String>,
}

pub(crate) fn value_of(num: Option<f64>, text: Option<String>) -> serde_json::Value {
    match (num, text) {
        (Some(n), _) => serde_json::Number::from_f64(n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        (None, Some(t)) => serde_json::Value::String(t),
        (None, None) => serde_json::Value::Null,
    }
}

/// The report of `serial`; `NotFound` when no unit has that serial.
pub async fn unit_report(db: &Db, serial: &str) -> Result<UnitReport, QueryError> {
    #[derive(sqlx::FromRow)]
    struct Head {
        id: i64,
        part: Option<String>,
        work_order: Option<String>,
        line: Option<String>,
        placeholder: bool,
    }
    let head: Option<Head> = db
        .fetch_optional(
            Sql::new(
                "SELECT id, part, work_order, line, placeholder FROM items \
                 WHERE kind = 'unit' AND ext_id = $1",
            )
            .bind(serial),
        )
        .await?;
    let Some(head) = head else {
        return Err(QueryError::NotFound {
            what: "unit",
            id: serial.to_owned(),
        });
    };
    let uid = head.id;
    let (materials, components) = children(db, uid).await?;
    let mut report = UnitReport {
        serial: serial.to_owned(),
        part: head.part,
        work_order: head.work_order,
        line: head.line,
        placeholder: head.placeholder,
        materials,
        component_materials: component_materials(db, uid).await?,
        components,
        operations: operations(db, uid).await?,
        quality_checks: quality_checks(db, uid).await?,
        containers: Vec::new(),
        shipment: None,
        holds: Vec::new(),
        dispositions: Vec::new(),
        supplier_history: Vec::new(),
    };
    let holders;
    (report.containers, holders) = containers(db, uid).await?;
    report.shipment = shipment(db, &holders).await?;
    report.holds = crate::routing::holds_for_unit(db, serial)
        .await
        .map_err(routing_error)?;
    report.dispositions = crate::routing::dispositions_for_unit(db, serial)
        .await
        .map_err(routing_error)?;
    Ok(report)
}

/// Direct children: lots (materials, also those named only by an operation) and units
/// (components).
async fn children(db: &Db, uid: i64) -> Result<(Vec<Material>, Vec<Component>), QueryError> {
    #[derive(sqlx::FromRow)]
    struct Child {
        kind: String,
        ext_id: String,
        part: Option<String>,
        supplier: Option<String>,
        qty: Option<f64>,
        station: Option<String>,
        #[sqlx(try_from = "sql::Time")]
        valid_from: String,
        #[sqlx(try_from = "sql::OptTime")]
        valid_to: Option<String>,
    }
    let rows: Vec<Child> = db
        .fetch_all(
            Sql::new(
                "SELECT c.kind, c.ext_id, c.part, c.supplier, e.qty, e.station, e.valid_from, \
                 e.valid_to FROM edges e JOIN items c ON c.id = e.child_id \
                 WHERE e.parent_id = $1 AND e.relation IN ('consumed', 'assembled') \
                 ORDER BY e.valid_from, e.id",
            )
            .bind(uid),
        )
        .await?;
    let mut materials = Vec::new();
    let mut components = Vec::new();
    for r in rows {
        match r.kind.as_str() {
            "lot" => materials.push(Material {
                lot: r.ext_id,
                part: r.part,
                supplier: r.supplier,
                qty: r.qty,
                station: r.station,
                closed: r.valid_to.is_some(),
            }),
            "unit" => components.push(Component {
                serial: r.ext_id,
                part: r.part,
                station: r.station,
                assembled_at: r.valid_from,
                removed_at: r.valid_to,
            }),
            _ => {}
        }
    }

    // Lots named only by an operation's materials (no genealogy edge) still belong in the record.
    #[derive(sqlx::FromRow)]
    struct Used {
        lot: String,
        part: Option<String>,
        supplier: Option<String>,
        qty: Option<f64>,
        station: Option<String>,
    }
    let used: Vec<Used> = db
        .fetch_all(
            Sql::new(
                "SELECT l.ext_id AS lot, l.part, l.supplier, om.qty, o.station \
                 FROM operation_materials om JOIN operations o ON o.id = om.operation_id \
                 JOIN items l ON l.id = om.lot_id \
                 WHERE o.unit_id = $1 ORDER BY o.completed_at, o.id",
            )
            .bind(uid),
        )
        .await?;
    for u in used {
        if !materials.iter().any(|m| m.lot == u.lot) {
            materials.push(Material {
                lot: u.lot,
                part: u.part,
                supplier: u.supplier,
                qty: u.qty,
                station: u.station,
                closed: false,
            });
        }
    }
    Ok((materials, components))
}

/// Lots of sub-assemblies at every level (currently assembled ones), set-based, sorted by
/// (via, lot).
async fn component_materials(db: &Db, uid: i64) -> Result<Vec<ComponentMaterial>, QueryError> {
    // The recursion joins nothing but `edges`: joining `items` inside the recursive step made
    // SQLite build a Bloom filter over all items on every step (300 ms at 1 M units). Assembled
    // lots enter `sub` too and are dropped by `s.kind = 'unit'`. Every join keeps its written
    // order (sub → s → e → l) on SQLite, whose planner otherwise scanned edges (seconds at
    // 1 M units).
    let join = db.dialect().ordered_join();
    let q = Sql::new(format!(
        "WITH RECURSIVE sub(id) AS ( \
            SELECT e.child_id FROM edges e \
             WHERE e.parent_id = $1 AND e.relation = 'assembled' AND e.valid_to IS NULL \
            UNION \
            SELECT e.child_id FROM sub {join} edges e ON e.parent_id = sub.id \
             WHERE e.relation = 'assembled' AND e.valid_to IS NULL \
         ) \
         SELECT s.ext_id AS via, l.ext_id AS lot, l.part, l.supplier, e.qty, e.station \
         FROM sub {join} items s ON s.id = sub.id AND s.kind = 'unit' \
         {join} edges e ON e.parent_id = sub.id AND e.relation IN ('consumed', 'assembled') \
           AND e.valid_to IS NULL \
         {join} items l ON l.id = e.child_id AND l.kind = 'lot'"
    ))
    .bind(uid);
    let mut rows: Vec<ComponentMaterial> = db.fetch_all(q).await?;
    rows.sort_by(|a, b| (&a.via, &a.lot).cmp(&(&b.via, &b.lot)));
    Ok(rows)
}

/// Operations with their parameters (one query for all parameters).
async fn operations(db: &Db, uid: i64) -> Result<Vec<Operation>, QueryError> {
    let mut ops: Vec<Operation> = db
        .fetch_all(
            Sql::new(
                "SELECT id, station, operation, equipment, operator, recipe, started_at, \
                 completed_at, result, defect_code, out_of_spec, environment \
                 FROM operations WHERE unit_id = $1 ORDER BY completed_at, id",
            )
            .bind(uid),
        )
        .await?;
    if ops.is_empty() {
        return Ok(ops);
    }
    #[derive(sqlx::FromRow)]
    struct OfOperation {
        operation_id: i64,
        #[sqlx(flatten)]
        parameter: Parameter,
    }
    let params: Vec<OfOperation> = db
        .fetch_all(
            Sql::new(
                "SELECT p.operation_id, p.name, p.value_num, p.value_text, p.unit, p.lsl, \
                 p.usl, p.in_spec FROM operation_parameters p \
                 JOIN operations o ON o.id = p.operation_id \
                 WHERE o.unit_id = $1 ORDER BY p.operation_id",
            )
            .bind(uid),
        )
        .await?;
    let index: HashMap<i64, usize> = ops
        .iter()
        .enumerate()
        .map(|(i, o)| (o.summary.id, i))
        .collect();
    for p in params {
        if let Some(&i) = index.get(&p.operation_id) {
            ops[i].parameters.push(p.parameter);
        }
    }
    for op in &mut ops {
        op.parameters.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(ops)
}

async fn quality_checks(db: &Db, uid: i64) -> Result<Vec<QualityCheck>, QueryError> {
    Ok(db
        .fetch_all(
            Sql::new(
                "SELECT characteristic, value_num, value_text, unit_of_measure, lsl, usl, result, \
                 station, operator, checked_at FROM quality_checks \
                 WHERE unit_id = $1 ORDER BY checked_at, id",
            )
            .bind(uid),
        )
        .await?)
}

/// Containers holding the unit now, innermost first, and the ids of everything holding it
/// (the unit itself first).
async fn containers(db: &Db, uid: i64) -> Result<(Vec<Container>, Vec<i64>), QueryError> {
    #[derive(sqlx::FromRow)]
    struct Holder {
        id: i64,
        ext_id: String,
        level: Option<String>,
    }
    // Walk up packing edges valid now. `depth` keeps case before pallet; the depth bound stops
    // a corrupt packing loop.
    let rows: Vec<Holder> = db
        .fetch_all(
            Sql::new(
                "WITH RECURSIVE up(id, depth) AS ( \
                    SELECT $1, 0 \
                    UNION \
                    SELECT e.parent_id, up.depth + 1 FROM edges e JOIN up ON e.child_id = up.id \
                     WHERE e.relation = 'packed' AND e.valid_to IS NULL AND up.depth < 16 \
                 ) \
                 SELECT i.id, i.ext_id, i.level FROM up JOIN items i ON i.id = up.id \
                 WHERE up.depth > 0 GROUP BY i.id, i.ext_id, i.level \
                 ORDER BY MIN(up.depth), i.ext_id",
            )
            .bind(uid),
        )
        .await?;
    let mut holders = vec![uid];
    let mut containers = Vec::with_capacity(rows.len());
    for r in rows {
        holders.push(r.id);
        containers.push(Container {
            id: r.ext_id,
            level: r.level,
        });
    }
    Ok((containers, holders))
}

/// The newest shipment of the unit or of any container holding it.
async fn shipment(db: &Db, holders: &[i64]) -> Result<Option<Shipment>, QueryError> {
    Ok(db
        .fetch_optional(Sql::new(format!(
            "SELECT s.ext_id AS id, s.customer, COALESCE(s.shipped_at, e.valid_from) AS shipped_at \
             FROM edges e JOIN items s ON s.id = e.parent_id \
             WHERE e.relation = 'shipped' AND e.valid_to IS NULL AND e.child_id IN ({}) \
             ORDER BY e.valid_from DESC, e.id DESC LIMIT 1",
            id_list(holders)
        )))
        .await?)
}

fn routing_error(e: crate::routing::RoutingError) -> QueryError {
    match e {
        crate::routing::RoutingError::Db(e) => QueryError::Db(e),
        crate::routing::RoutingError::Query(q) => q,
        other => QueryError::Data(other.to_string()),
    }
}
