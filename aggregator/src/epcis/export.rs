//! Streamed EPCIS documents. The event log is read in keyset pages of [`PAGE`] rows (no
//! connection is held between pages, nothing is buffered beyond one page); each page's events are
//! mapped, filtered and written as JSON text in frames of about [`CHUNK`] bytes into a bounded
//! channel (4 frames) that the HTTP body drains.
//! A database error mid-stream ends the body early (the client sees a truncated document, never
//! a complete-looking wrong one) and is logged.

use bytes::Bytes;
use futures::Stream;
use threadline_shared::event::Record;
use threadline_shared::time::Timestamp;
use tokio::sync::mpsc;

use super::{EPCIS_CONTEXT, Event, EventType, Ids, map_record};
use crate::store::Db;
use crate::store::sql::{Bind, Sql};

/// Event log rows read per query.
pub const PAGE: i64 = 2000;
/// A chunk is sent once it holds this many bytes.
pub const CHUNK: usize = 64 * 1024;

/// The filters of `GET /api/v1/epcis/events` (EPCIS 2.0 SimpleEventQuery parameters).
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// `GE_eventTime`
    pub ge_event_time: Option<Timestamp>,
    /// `LT_eventTime`
    pub lt_event_time: Option<Timestamp>,
    /// `MATCH_epc`: epcList / childEPCs contain one of these.
    pub match_epc: Vec<String>,
    /// `MATCH_anyEPC`: epcList, childEPCs, inputEPCList, outputEPCList or parentID.
    pub match_any_epc: Vec<String>,
    /// `MATCH_anyEPCClass`: an EPC class of a quantity list.
    pub match_any_epc_class: Vec<String>,
    /// `EQ_bizStep`, bare CBV values.
    pub biz_step: Option<Vec<String>>,
    /// `eventType`
    pub event_type: Option<Vec<EventType>>,
}

impl EventQuery {
    pub fn keep(&self, e: &Event) -> bool {
        (self.match_epc.is_empty() || e.epcs().any(|x| self.match_epc.iter().any(|m| m == x)))
            && (self.match_any_epc.is_empty()
                || e.any_epcs()
                    .any(|x| self.match_any_epc.iter().any(|m| m == x)))
            && (self.match_any_epc_class.is_empty()
                || e.any_classes()
                    .any(|x| self.match_any_epc_class.iter().any(|m| m == x)))
            && self
                .biz_step
                .as_ref()
                .is_none_or(|l| e.biz_step.is_some_and(|b| l.iter().any(|x| x == b)))
            && self
                .event_type
                .as_ref()
                .is_none_or(|l| l.contains(&e.type_))
            && self.ge_event_time.is_none_or(|t| e.event_time >= trunc(t))
            && self.lt_event_time.is_none_or(|t| e.event_time < trunc(t))
    }
}

/// Event times are exported at millisecond precision; bounds compare at the same precision.
fn trunc(t: Timestamp) -> Timestamp {
    use chrono::SubsecRound as _;
    t.trunc_subsecs(3)
}

/// Which document and which rows.
#[derive(Debug, Clone)]
pub enum Selection {
    /// `EPCISQueryDocument` of a query over the whole log.
    Query(EventQuery),
    /// `EPCISDocument` of the events with these log ids (one unit's), each event kept only if
    /// it names `epc` (as an EPC or an EPC class).
    Ids { ids: Vec<i64>, epc: String },
}

#[derive(sqlx::FromRow)]
struct LogRow {
    id: i64,
    gateway: String,
    body: String,
}

/// The document's head: everything up to the opening of `eventList`.
fn head(ids: &Ids, sel: &Selection) -> String {
    let ctx = serde_json::json!([EPCIS_CONTEXT, {"tl": ids.vocabulary()}]);
    let now = super::event::time_ms(&threadline_shared::time::now());
    match sel {
        Selection::Query(_) => format!(
            "{{\"@context\":{ctx},\"type\":\"EPCISQueryDocument\",\"schemaVersion\":\"2.0\",\
             \"creationDate\":\"{now}\",\"epcisBody\":{{\"queryResults\":{{\
             \"queryName\":\"SimpleEventQuery\",\"resultsBody\":{{\"eventList\":["
        ),
        Selection::Ids { .. } => format!(
            "{{\"@context\":{ctx},\"type\":\"EPCISDocument\",\"schemaVersion\":\"2.0\",\
             \"creationDate\":\"{now}\",\"epcisBody\":{{\"eventList\":["
        ),
    }
}

fn tail(sel: &Selection) -> &'static str {
    match sel {
        Selection::Query(_) => "]}}}}",
        Selection::Ids { .. } => "]}}",
    }
}

/// The record types the query can match (SQL pre-filter; the exact filter runs on the mapped
/// events).
fn type_filter(q: &EventQuery) -> String {
    let types = super::record_types(q.event_type.as_deref(), q.biz_step.as_deref());
    if types.is_empty() {
        return "AND 1 = 0".to_owned();
    }
    // Fixed identifiers from `record_types`, never user text.
    let list: Vec<String> = types.iter().map(|t| format!("'{t}'")).collect();
    format!("AND type IN ({})", list.join(","))
}

async fn page(db: &Db, sel: &Selection, after: i64, chunk: usize) -> sqlx::Result<Vec<LogRow>> {
    match sel {
        Selection::Query(q) => {
            let text = format!(
                "SELECT id, gateway, body FROM events WHERE id > $1 \
                 AND ($2 IS NULL OR ts >= $2) AND ($3 IS NULL OR ts < $3) {} \
                 ORDER BY id LIMIT $4",
                type_filter(q)
            );
            db.fetch_all(
                Sql::new(text)
                    .bind(after)
                    .bind(Bind::Time(q.ge_event_time.map(trunc)))
                    // An event at 10:00:00.0004 is exported as 10:00:00.000, so a bound of
                    // LT 10:00:00.0002 must still see it: widen by a millisecond, the exact
                    // filter on the mapped event decides.
                    .bind(Bind::Time(
                        q.lt_event_time
                            .map(|t| trunc(t) + chrono::Duration::milliseconds(1)),
                    ))
                    .bind(PAGE),
            )
            .await
        }
        Selection::Ids { ids, .. } => {
            let slice = &ids[chunk.min(ids.len())..(chunk + PAGE as usize).min(ids.len())];
            if slice.is_empty() {
                return Ok(Vec::new());
            }
            let mut q = Sql::new(String::new());
            let cond = db.dialect().id_in(&mut q, "id", slice);
            q.push(&format!(
                "SELECT id, gateway, body FROM events WHERE {cond} ORDER BY id"
            ));
            db.fetch_all(q).await
        }
    }
}

fn keep(sel: &Selection, e: &Event) -> bool {
    match sel {
        Selection::Query(q) => q.keep(e),
        Selection::Ids { epc, .. } => {
            e.any_epcs().any(|x| x == epc) || e.any_classes().any(|x| x == epc)
        }
    }
}

/// Maps and writes one page; returns how many events were written.
fn write_page(
    ids: &Ids,
    sel: &Selection,
    rows: &[LogRow],
    buf: &mut String,
    first: &mut bool,
) -> usize {
    let mut n = 0;
    for row in rows {
        let record = match Record::from_json(&row.body) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(event = row.id, error = %e, "stored event does not parse; left out of the EPCIS export");
                continue;
            }
        };
        for ev in map_record(ids, &row.gateway, &record) {
            if !keep(sel, &ev) {
                continue;
            }
            if !*first {
                buf.push(',');
            }
            *first = false;
            // Serializing a plain data structure into a String cannot fail.
            if let Ok(s) = serde_json::to_string(&ev) {
                buf.push_str(&s);
            }
            n += 1;
        }
    }
    n
}

/// The whole document as a stream of chunks (for `axum::body::Body::from_stream`).
pub fn stream(
    db: Db,
    ids: Ids,
    sel: Selection,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut buf = head(&ids, &sel);
        let mut first = true;
        let mut after = 0i64;
        let mut chunk = 0usize;
        loop {
            let rows = match page(&db, &sel, after, chunk).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "EPCIS export stopped: database error");
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            };
            let Some(last) = rows.last().map(|r| r.id) else {
                break;
            };
            after = last;
            chunk += PAGE as usize;
            // A few rows at a time, so a frame is about CHUNK bytes whatever the page holds.
            for rows in rows.chunks(64) {
                write_page(&ids, &sel, rows, &mut buf, &mut first);
                if buf.len() >= CHUNK {
                    let out = std::mem::replace(&mut buf, String::with_capacity(CHUNK + 8192));
                    if tx.send(Ok(Bytes::from(out))).await.is_err() {
                        return; // the client went away
                    }
                }
            }
            if matches!(sel, Selection::Query(_)) && (rows.len() as i64) < PAGE {
                break;
            }
        }
        buf.push_str(tail(&sel));
        let _ = tx.send(Ok(Bytes::from(buf))).await;
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// The log ids of the events that may name a unit: its operations, links, checks and start,
/// and the closes (`disassembled` / `unpacked`) of its links — an edge keeps the id of its
/// opening event only, its close is the close event at its `valid_to` (a close still waiting for
/// its edge is in `pending_closes` with its event id). [`keep`] then drops any event of the same
/// instant that does not name the unit.
pub async fn unit_event_ids(db: &Db, item_id: i64) -> sqlx::Result<Vec<i64>> {
    #[derive(sqlx::FromRow)]
    struct Id {
        id: i64,
    }
    let rows: Vec<Id> = db
        .fetch_all(
            Sql::new(
                "SELECT event_id AS id FROM operations WHERE unit_id = $1 AND event_id IS NOT NULL
                 UNION SELECT event_id FROM edges
                   WHERE (parent_id = $1 OR child_id = $1) AND event_id IS NOT NULL
                 UNION SELECT event_id FROM quality_checks WHERE unit_id = $1 AND event_id IS NOT NULL
                 UNION SELECT e.id FROM items i JOIN events e ON e.ts = i.first_seen_at
                   WHERE i.id = $1 AND e.type = 'unit_started'
                 UNION SELECT e.id FROM edges g JOIN events e ON e.ts = g.valid_to
                   WHERE (g.parent_id = $1 OR g.child_id = $1) AND g.valid_to IS NOT NULL
                     AND e.type IN ('disassembled', 'unpacked')
                 UNION SELECT event_id FROM pending_closes WHERE parent_id = $1 OR child_id = $1",
            )
            .bind(item_id),
        )
        .await?;
    let mut ids: Vec<i64> = rows.into_iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}
