//! The unit report: everything an auditor asks about one serial, in one answer.
//!
//! `materials` are the lots this unit consumed directly; `component_materials` are the lots its
//! sub-assemblies consumed, at every level, each naming the sub-assembly (`via`) it went into.
//! `containers` walk up the packing edges that are valid now (case, then pallet, …); `shipment`
//! is the newest shipment of the unit or of any of those containers.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row as _;
use utoipa::ToSchema;

use super::{QueryError, on_db, ts_opt, ts_text};
use crate::store::Db;

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

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
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

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Operation {
    pub id: i64,
    pub station: String,
    pub operation: String,
    pub equipment: Option<String>,
    pub operator: Option<String>,
    pub recipe: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: String,
    pub result: String,
    pub defect_code: Option<String>,
    pub out_of_spec: bool,
    pub parameters: Vec<Parameter>,
    pub environment: Vec<EnvValue>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Parameter {
    pub name: String,
    /// Number or text, as captured.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
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

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct QualityCheck {
    pub characteristic: String,
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    pub unit: Option<String>,
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    pub result: String,
    pub station: Option<String>,
    pub operator: Option<String>,
    pub checked_at: String,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Container {
    pub id: String,
    pub level: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Shipment {
    pub id: String,
    pub customer: Option<String>,
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
    // The unit itself.
    let head_sql = "SELECT id, part, work_order, line, placeholder FROM items WHERE kind = 'unit' AND ext_id = $1";
    type Head = (i64, Option<String>, Option<String>, Option<String>, bool);
    let head: Option<Head> = on_db!(db, p => {
        match sqlx::query(head_sql).bind(serial).fetch_optional(p).await? {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)),
            None => None,
        }
    });
    let Some((uid, part, work_order, line, placeholder)) = head else {
        return Err(QueryError::NotFound {
            what: "unit",
            id: serial.to_owned(),
        });
    };

    // Direct children: lots (materials) and units (components).
    let child_sql = "SELECT c.kind, c.ext_id, c.part, c.supplier, e.qty, e.station, e.valid_from, e.valid_to \
         FROM edges e JOIN items c ON c.id = e.child_id \
         WHERE e.parent_id = $1 AND e.relation IN ('consumed', 'assembled') \
         ORDER BY e.valid_from, e.id";
    let mut materials = Vec::new();
    let mut components = Vec::new();
    on_db!(db, p => {
        for r in sqlx::query(child_sql).bind(uid).fetch_all(p).await? {
            let kind: String = r.try_get(0)?;
            let valid_from: DateTime<Utc> = r.try_get(6)?;
            let valid_to: Option<DateTime<Utc>> = r.try_get(7)?;
            if kind == "lot" {
                materials.push(Material {
                    lot: r.try_get(1)?,
                    part: r.try_get(2)?,
                    supplier: r.try_get(3)?,
                    qty: r.try_get(4)?,
                    station: r.try_get(5)?,
                    closed: valid_to.is_some(),
                });
            } else if kind == "unit" {
                components.push(Component {
                    serial: r.try_get(1)?,
                    part: r.try_get(2)?,
                    station: r.try_get(5)?,
                    assembled_at: ts_text(&valid_from),
                    removed_at: ts_opt(valid_to),
                });
            }
        }
    });

    // Lots named only by an operation's materials (no genealogy edge) still belong in the record.
    let om_sql = "SELECT l.ext_id, l.part, l.supplier, om.qty, o.station FROM operation_materials om \
         JOIN operations o ON o.id = om.operation_id JOIN items l ON l.id = om.lot_id \
         WHERE o.unit_id = $1 ORDER BY o.completed_at, o.id";
    on_db!(db, p => {
        for r in sqlx::query(om_sql).bind(uid).fetch_all(p).await? {
            let lot: String = r.try_get(0)?;
            if materials.iter().any(|m: &Material| m.lot == lot) {
                continue;
            }
            materials.push(Material {
                lot,
                part: r.try_get(1)?,
                supplier: r.try_get(2)?,
                qty: r.try_get(3)?,
                station: r.try_get(4)?,
                closed: false,
            });
        }
    });

    // Lots of sub-assemblies at every level (currently assembled ones), set-based.
    // The recursion joins nothing but `edges`: joining `items` inside the recursive step made
    // SQLite build a Bloom filter over all items on every step (300 ms at 1 M units). Assembled
    // lots enter `sub` too and are dropped by `s.kind = 'unit'`.
    let sub_sql = "WITH RECURSIVE sub(id) AS ( \
            SELECT e.child_id FROM edges e \
             WHERE e.parent_id = $1 AND e.relation = 'assembled' AND e.valid_to IS NULL \
            UNION \
            SELECT e.child_id FROM sub JOIN edges e ON e.parent_id = sub.id \
             WHERE e.relation = 'assembled' AND e.valid_to IS NULL \
         ) \
         SELECT s.ext_id, l.ext_id, l.part, l.supplier, e.qty, e.station \
         FROM sub JOIN items s ON s.id = sub.id AND s.kind = 'unit' \
         JOIN edges e ON e.parent_id = sub.id AND e.relation IN ('consumed', 'assembled') AND e.valid_to IS NULL \
         JOIN items l ON l.id = e.child_id AND l.kind = 'lot'";
    // SQLite: CROSS JOIN pins the join order (sub → s → e → l); left to itself, the SQLite
    // bundled with sqlx chose an order that scanned edges (seconds at 1 M units).
    let sub_sql = match db {
        Db::Postgres(_) => sub_sql.to_owned(),
        Db::Sqlite(_) => sub_sql.replace(" JOIN ", " CROSS JOIN "),
    };
    let mut component_materials = Vec::new();
    on_db!(db, p => {
        for r in sqlx::query(sqlx::AssertSqlSafe(sub_sql)).bind(uid).fetch_all(p).await? {
            component_materials.push(ComponentMaterial {
                via: r.try_get(0)?,
                lot: r.try_get(1)?,
                part: r.try_get(2)?,
                supplier: r.try_get(3)?,
                qty: r.try_get(4)?,
                station: r.try_get(5)?,
            });
        }
    });

    component_materials.sort_by(|a, b| (&a.via, &a.lot).cmp(&(&b.via, &b.lot)));

    // Operations, then their parameters in one query.
    let ops_sql = if matches!(db, Db::Postgres(_)) {
        "SELECT id, station, operation, equipment, operator, recipe, started_at, completed_at, result, \
         defect_code, out_of_spec, environment::text FROM operations WHERE unit_id = $1 ORDER BY completed_at, id"
    } else {
        "SELECT id, station, operation, equipment, operator, recipe, started_at, completed_at, result, \
         defect_code, out_of_spec, environment FROM operations WHERE unit_id = $1 ORDER BY completed_at, id"
    };
    let mut operations = Vec::new();
    on_db!(db, p => {
        for r in sqlx::query(ops_sql).bind(uid).fetch_all(p).await? {
            let env_text: String = r.try_get(11)?;
            let environment: Vec<EnvValue> = serde_json::from_str(&env_text)
                .map_err(|e| QueryError::Data(format!("operation environment: {e}")))?;
            let started_at: Option<DateTime<Utc>> = r.try_get(6)?;
            let completed_at: DateTime<Utc> = r.try_get(7)?;
            operations.push(Operation {
                id: r.try_get(0)?,
                station: r.try_get(1)?,
                operation: r.try_get(2)?,
                equipment: r.try_get(3)?,
                operator: r.try_get(4)?,
                recipe: r.try_get(5)?,
                started_at: ts_opt(started_at),
                completed_at: ts_text(&completed_at),
                result: r.try_get(8)?,
                defect_code: r.try_get(9)?,
                out_of_spec: r.try_get(10)?,
                parameters: Vec::new(),
                environment,
            });
        }
    });
    if !operations.is_empty() {
        let index: HashMap<i64, usize> = operations
            .iter()
            .enumerate()
            .map(|(i, o)| (o.id, i))
            .collect();
        let par_sql = "SELECT p.operation_id, p.name, p.value_num, p.value_text, p.unit, p.lsl, p.usl, p.in_spec \
             FROM operation_parameters p JOIN operations o ON o.id = p.operation_id \
             WHERE o.unit_id = $1 ORDER BY p.operation_id";
        on_db!(db, p => {
            for r in sqlx::query(par_sql).bind(uid).fetch_all(p).await? {
                let op: i64 = r.try_get(0)?;
                if let Some(&i) = index.get(&op) {
                    operations[i].parameters.push(Parameter {
                        name: r.try_get(1)?,
                        value: value_of(r.try_get(2)?, r.try_get(3)?),
                        unit: r.try_get(4)?,
                        lsl: r.try_get(5)?,
                        usl: r.try_get(6)?,
                        in_spec: r.try_get(7)?,
                    });
                }
            }
        });
        for op in &mut operations {
            op.parameters.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }

    let qc_sql = "SELECT characteristic, value_num, value_text, unit_of_measure, lsl, usl, result, station, operator, checked_at \
         FROM quality_checks WHERE unit_id = $1 ORDER BY checked_at, id";
    let mut quality_checks = Vec::new();
    on_db!(db, p => {
        for r in sqlx::query(qc_sql).bind(uid).fetch_all(p).await? {
            let checked_at: DateTime<Utc> = r.try_get(9)?;
            quality_checks.push(QualityCheck {
                characteristic: r.try_get(0)?,
                value: value_of(r.try_get(1)?, r.try_get(2)?),
                unit: r.try_get(3)?,
                lsl: r.try_get(4)?,
                usl: r.try_get(5)?,
                result: r.try_get(6)?,
                station: r.try_get(7)?,
                operator: r.try_get(8)?,
                checked_at: ts_text(&checked_at),
            });
        }
    });

    // Containers: walk up packing edges valid now. `depth` keeps case before pallet; the depth
    // bound stops a corrupt packing loop.
    let cont_sql = "WITH RECURSIVE up(id, depth) AS ( \
            SELECT $1, 0 \
            UNION \
            SELECT e.parent_id, up.depth + 1 FROM edges e JOIN up ON e.child_id = up.id \
             WHERE e.relation = 'packed' AND e.valid_to IS NULL AND up.depth < 16 \
         ) \
         SELECT i.id, i.ext_id, i.level, MIN(up.depth) FROM up JOIN items i ON i.id = up.id \
         WHERE up.depth > 0 GROUP BY i.id, i.ext_id, i.level ORDER BY MIN(up.depth), i.ext_id";
    let mut containers = Vec::new();
    let mut holders = vec![uid];
    on_db!(db, p => {
        for r in sqlx::query(cont_sql).bind(uid).fetch_all(p).await? {
            holders.push(r.try_get(0)?);
            containers.push(Container { id: r.try_get(1)?, level: r.try_get(2)? });
        }
    });

    // The shipment of the unit or of any container holding it (newest first).
    let ship_sql = format!(
        "SELECT s.ext_id, s.customer, s.shipped_at, e.valid_from FROM edges e JOIN items s ON s.id = e.parent_id \
         WHERE e.relation = 'shipped' AND e.valid_to IS NULL AND e.child_id IN ({}) \
         ORDER BY e.valid_from DESC, e.id DESC LIMIT 1",
        super::id_list(&holders)
    );
    let shipment = on_db!(db, p => {
        match sqlx::query(sqlx::AssertSqlSafe(ship_sql)).fetch_optional(p).await? {
            Some(r) => {
                let shipped_at: Option<DateTime<Utc>> = r.try_get(2)?;
                let edge_at: DateTime<Utc> = r.try_get(3)?;
                Some(Shipment {
                    id: r.try_get(0)?,
                    customer: r.try_get(1)?,
                    shipped_at: Some(ts_text(&shipped_at.unwrap_or(edge_at))),
                })
            }
            None => None,
        }
    });

    Ok(UnitReport {
        serial: serial.to_owned(),
        part,
        work_order,
        line,
        placeholder,
        materials,
        component_materials,
        components,
        operations,
        quality_checks,
        containers,
        shipment,
    })
}
