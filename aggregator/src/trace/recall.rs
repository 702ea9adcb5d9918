//! Recall scope of a material lot: every unit it went into (through every level of assembly),
//! every container holding those units (case, pallet, …), every shipment and customer.
//!
//! Seeds: the lot and the units whose operations list it as a material (in case a lot was only
//! recorded as an operation material, without a genealogy edge). From there one set-based
//! recursive CTE walks child → parent over the edges that are valid now
//! (`include_closed` follows closed ones too, for the widest possible scope). `UNION` (not
//! `UNION ALL`) makes it cycle-safe: a row already produced is not expanded again. The walk
//! reads only the `edges_child_cover` index on PostgreSQL (see docs/query-plans.md).
//!
//! The statement yields the answer in output order — units, containers, shipments, then the
//! distinct customers, each sorted in byte order by the database — so that the API can stream
//! it ([`RecallRows`]): the process holds a channel's worth of rows, never the whole scope
//! (a lot in a million units would otherwise be a few hundred MB of strings per request).

use serde::Serialize;
use utoipa::ToSchema;

use bytes::Bytes;
use tokio::sync::mpsc;

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

/// Part of the answer a row of the recall statement belongs to, in output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Units,
    Containers,
    Shipments,
    Customers,
}

impl Section {
    fn of(n: i64) -> Option<Section> {
        Some(match n {
            0 => Section::Units,
            1 => Section::Containers,
            2 => Section::Shipments,
            3 => Section::Customers,
            _ => return None,
        })
    }
}

/// One row of the recall statement: an item of `section`, its id (for a customer: the name)
/// and, for a shipment, its customer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecallRow {
    section: i64,
    pub id: String,
    pub customer: Option<String>,
}

impl RecallRow {
    pub fn section(&self) -> Option<Section> {
        Section::of(self.section)
    }
}

/// The recall statement of `lot_id` (see the module docs).
fn statement(db: &Db, lot_id: i64, include_closed: bool) -> Sql<'static> {
    let valid = if include_closed {
        ""
    } else {
        " AND e.valid_to IS NULL"
    };
    let d = db.dialect();
    // Each item reached is looked up by id once per row (`Dialect::lookup_join` says why), and
    // PostgreSQL runs the walk without JIT compilation: it cannot know how far the walk goes,
    // and compiling for the millions of rows it guesses costs more than the walk.
    let lookup = d.lookup_join("items", "i", "kind, ext_id, customer", "id", "up.id");
    let order = d.byte_order("id");
    Sql::new(format!(
        "WITH RECURSIVE up(id) AS ( \
            SELECT CAST($1 AS BIGINT) \
            UNION \
            SELECT o.unit_id FROM operation_materials om JOIN operations o ON o.id = om.operation_id \
             WHERE om.lot_id = $1 \
            UNION \
            SELECT e.parent_id FROM edges e JOIN up ON e.child_id = up.id \
             WHERE e.relation IN ('consumed', 'assembled', 'packed', 'shipped'){valid} \
         ), \
         reached AS (SELECT i.kind, i.ext_id, i.customer FROM up {lookup} WHERE i.kind <> 'lot') \
         SELECT section, id, customer FROM ( \
            SELECT CAST(CASE kind WHEN 'unit' THEN 0 WHEN 'container' THEN 1 ELSE 2 END \
                        AS BIGINT) AS section, \
                   ext_id AS id, customer \
              FROM reached WHERE kind IN ('unit', 'container', 'shipment') \
            UNION ALL \
            SELECT DISTINCT CAST(3 AS BIGINT), customer, CAST(NULL AS TEXT) \
              FROM reached WHERE kind = 'shipment' AND customer IS NOT NULL \
         ) s ORDER BY section, {order}"
    ))
    .bind(lot_id)
    .without_jit()
}

/// The lot's internal id; `NotFound` when no lot has that id.
async fn lot_id(db: &Db, lot: &str) -> Result<i64, QueryError> {
    item_id(db, ItemKind::Lot, lot)
        .await?
        .ok_or_else(|| QueryError::NotFound {
            what: "lot",
            id: lot.to_owned(),
        })
}

/// The recall scope of `lot`, whole in memory (the web page, holds); `NotFound` when no lot has
/// that id. The API streams the same rows instead ([`recall_rows`]).
pub async fn recall(db: &Db, lot: &str, include_closed: bool) -> Result<Recall, QueryError> {
    let id = lot_id(db, lot).await?;
    let rows: Vec<RecallRow> = db.fetch_all(statement(db, id, include_closed)).await?;
    let mut r = Recall {
        lot: lot.to_owned(),
        units: Vec::new(),
        containers: Vec::new(),
        shipments: Vec::new(),
        customers: Vec::new(),
        counts: RecallCounts {
            units: 0,
            containers: 0,
            shipments: 0,
            customers: 0,
        },
    };
    for row in rows {
        match row.section() {
            Some(Section::Units) => r.units.push(row.id),
            Some(Section::Containers) => r.containers.push(row.id),
            Some(Section::Shipments) => r.shipments.push(RecallShipment {
                id: row.id,
                customer: row.customer,
            }),
            Some(Section::Customers) => r.customers.push(row.id),
            None => {}
        }
    }
    r.counts = RecallCounts {
        units: r.units.len(),
        containers: r.containers.len(),
        shipments: r.shipments.len(),
        customers: r.customers.len(),
    };
    Ok(r)
}

/// Rows of the recall statement the streaming answer waits for at most.
const STREAM_ROWS: usize = 1_024;

/// The rows of `lot`'s recall scope in output order, as the statement produces them (bounded:
/// see [`Db::spawn_rows`]); `NotFound` when no lot has that id.
pub async fn recall_rows(
    db: &Db,
    lot: &str,
    include_closed: bool,
) -> Result<RecallRows, QueryError> {
    let id = lot_id(db, lot).await?;
    Ok(RecallRows {
        rx: db.spawn_rows(statement(db, id, include_closed), STREAM_ROWS),
        first: None,
    })
}

/// The streamed rows of a recall scope.
pub struct RecallRows {
    rx: mpsc::Receiver<sqlx::Result<RecallRow>>,
    /// A row taken by [`RecallRows::ready`] and not yet handed out.
    first: Option<RecallRow>,
}

impl RecallRows {
    /// Waits for the first row (the walk and the sort are done by then): an error that happens
    /// before anything was sent — a timeout, the database down — is still a proper error answer.
    pub async fn ready(&mut self) -> Result<(), QueryError> {
        match self.rx.recv().await {
            Some(Ok(r)) => {
                self.first = Some(r);
                Ok(())
            }
            Some(Err(e)) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn next(&mut self) -> Option<sqlx::Result<RecallRow>> {
        match self.first.take() {
            Some(r) => Some(Ok(r)),
            None => self.rx.recv().await,
        }
    }

    /// The body as chunks of about [`CHUNK`] bytes, encoded by `enc`. A database error midway
    /// ends the stream with an error (the client sees a cut-off answer, never a short one that
    /// looks whole), and is logged.
    pub fn into_body<E: Encoder + Send + 'static>(
        self,
        enc: E,
    ) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures::stream::unfold(Some((self, enc)), |st| async move {
            let (mut rows, mut enc) = st?;
            let mut buf = String::with_capacity(CHUNK + 256);
            loop {
                match rows.next().await {
                    Some(Ok(row)) => {
                        enc.row(&mut buf, &row);
                        if buf.len() >= CHUNK {
                            return Some((Ok(Bytes::from(buf)), Some((rows, enc))));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "recall stream failed midway; answer cut off");
                        return Some((Err(std::io::Error::other(e)), None));
                    }
                    None => {
                        enc.finish(&mut buf);
                        return Some((Ok(Bytes::from(buf)), None));
                    }
                }
            }
        })
    }
}

/// Bytes of a streamed body chunk.
pub const CHUNK: usize = 64 * 1024;

/// Writes the streamed rows of a recall in one format.
pub trait Encoder {
    fn row(&mut self, out: &mut String, row: &RecallRow);
    fn finish(&mut self, out: &mut String);
}

/// The JSON answer, exactly as `serde_json` writes a [`Recall`] (same fields, same order).
pub struct JsonEncoder {
    lot: String,
    /// The section open in the output (`None`: none yet).
    open: Option<Section>,
    /// Items written in the open section.
    in_section: usize,
    counts: [usize; 4],
}

impl JsonEncoder {
    pub fn new(lot: &str) -> Self {
        JsonEncoder {
            lot: lot.to_owned(),
            open: None,
            in_section: 0,
            counts: [0; 4],
        }
    }

    /// Opens every section up to `to`, closing the one before.
    fn open_until(&mut self, out: &mut String, to: Option<Section>) {
        const NAMES: [(Section, &str); 4] = [
            (Section::Units, "units"),
            (Section::Containers, "containers"),
            (Section::Shipments, "shipments"),
            (Section::Customers, "customers"),
        ];
        if self.open.is_none() {
            out.push_str("{\"lot\":");
            push_json(out, &self.lot);
        }
        for (s, name) in NAMES {
            let needed = match to {
                Some(to) => s <= to,
                None => true,
            };
            if !needed || self.open.is_some_and(|o| s <= o) {
                continue;
            }
            if self.open.is_some() {
                out.push(']');
            }
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":[");
            self.open = Some(s);
            self.in_section = 0;
        }
    }
}

impl Encoder for JsonEncoder {
    fn row(&mut self, out: &mut String, row: &RecallRow) {
        let Some(section) = row.section() else { return };
        if self.open.is_none_or(|o| o < section) {
            self.open_until(out, Some(section));
        }
        if self.in_section > 0 {
            out.push(',');
        }
        self.in_section += 1;
        self.counts[section as usize] += 1;
        match section {
            Section::Shipments => {
                out.push_str("{\"id\":");
                push_json(out, &row.id);
                out.push_str(",\"customer\":");
                match &row.customer {
                    Some(c) => push_json(out, c),
                    None => out.push_str("null"),
                }
                out.push('}');
            }
            _ => push_json(out, &row.id),
        }
    }

    fn finish(&mut self, out: &mut String) {
        self.open_until(out, None);
        let [u, c, s, cu] = self.counts;
        out.push_str(&format!(
            "],\"counts\":{{\"units\":{u},\"containers\":{c},\"shipments\":{s},\"customers\":{cu}}}}}"
        ));
    }
}

fn push_json(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn row(section: i64, id: &str, customer: Option<&str>) -> RecallRow {
        RecallRow {
            section,
            id: id.to_owned(),
            customer: customer.map(str::to_owned),
        }
    }

    /// What `serde_json` writes for the same [`Recall`], whatever sections are empty.
    #[test]
    fn the_streamed_json_is_the_serialized_recall() {
        let all = [
            row(0, "U-1", None),
            row(0, "U-\"2\"", None),
            row(1, "C-1", None),
            row(2, "S-1", Some("ACME")),
            row(2, "S-2", None),
            row(3, "ACME", None),
        ];
        for mask in 0u32..64 {
            let rows: Vec<RecallRow> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, r)| r.clone())
                .collect();
            let mut enc = JsonEncoder::new("L-1");
            let mut out = String::new();
            for r in &rows {
                enc.row(&mut out, r);
            }
            enc.finish(&mut out);
            let mut want = Recall {
                lot: "L-1".to_owned(),
                units: vec![],
                containers: vec![],
                shipments: vec![],
                customers: vec![],
                counts: RecallCounts {
                    units: 0,
                    containers: 0,
                    shipments: 0,
                    customers: 0,
                },
            };
            for r in rows {
                match r.section().unwrap() {
                    Section::Units => want.units.push(r.id),
                    Section::Containers => want.containers.push(r.id),
                    Section::Shipments => want.shipments.push(RecallShipment {
                        id: r.id,
                        customer: r.customer,
                    }),
                    Section::Customers => want.customers.push(r.id),
                }
            }
            want.counts = RecallCounts {
                units: want.units.len(),
                containers: want.containers.len(),
                shipments: want.shipments.len(),
                customers: want.customers.len(),
            };
            assert_eq!(out, serde_json::to_string(&want).unwrap(), "mask {mask}");
        }
    }
}
