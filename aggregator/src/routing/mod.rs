//! Holds and dispositions: quality decisions the aggregator itself makes, recorded as events of
//! its own hash chain (chain id [`CHAIN_ID`]) and projected into `holds` / `dispositions`.
//!
//! The chain uses the gateways' link definition (`store::chain::link_hash`) with the nil epoch,
//! so `store::chain::Verifier` checks it unchanged. An append reads the chain's head and inserts
//! `seq + 1`; `seq` is the primary key, so two aggregators appending at once cannot fork the
//! chain — the loser's transaction fails on the key and is retried on the new head.
//!
//! Coverage: a hold on a lot (or a sub-assembly unit) covers every unit it reached — a unit is
//! held when any item of its backward trace is held, when a container holding it is held, or
//! when its part is held.

pub mod api;
pub mod publish;
pub mod routes;
pub mod wip;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::Db;
use crate::store::chain::{ChainRow, GENESIS, Verifier, link_hash};
use crate::store::model::VerifyReport;
use crate::store::sql::{self, Bind, Sql};
use crate::trace::{self, Direction, ItemKind, QueryError, TraceRequest};

/// The chain id of the aggregator's own events.
pub const CHAIN_ID: &str = "aggregator";

/// What a hold names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    Lot,
    Unit,
    Container,
    Part,
}

impl HoldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Lot => "lot",
            HoldKind::Unit => "unit",
            HoldKind::Container => "container",
            HoldKind::Part => "part",
        }
    }

    fn parse(s: &str) -> Option<HoldKind> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }
}

/// A quality decision on a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DispositionKind {
    Scrap,
    Rework,
    UseAsIs,
    ReturnToSupplier,
}

impl DispositionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DispositionKind::Scrap => "scrap",
            DispositionKind::Rework => "rework",
            DispositionKind::UseAsIs => "use_as_is",
            DispositionKind::ReturnToSupplier => "return_to_supplier",
        }
    }
}

/// One hold, active or released.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, sqlx::FromRow)]
pub struct Hold {
    pub hold_id: String,
    pub kind: String,
    pub id: String,
    pub reason: String,
    pub by: String,
    #[sqlx(try_from = "sql::Time")]
    pub placed_at: String,
    /// The hold's event in the aggregator chain.
    pub placed_seq: i64,
    pub active: bool,
    #[sqlx(try_from = "sql::OptTime")]
    pub released_at: Option<String>,
    pub release_reason: Option<String>,
    pub released_by: Option<String>,
    pub released_seq: Option<i64>,
}

/// A hold that covers a unit, with the item it was placed on.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct UnitHold {
    #[serde(flatten)]
    pub hold: Hold,
    /// `direct` (on the unit itself), `part`, or the kind and id it reaches the unit through
    /// (`lot LOT-A`, `unit SUB-1`, `container CASE-1`).
    pub via: String,
}

/// One disposition of a unit.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, sqlx::FromRow)]
pub struct Disposition {
    pub serial: String,
    pub disposition: String,
    pub reason: String,
    pub by: String,
    #[sqlx(try_from = "sql::Time")]
    pub at: String,
    /// The disposition's event in the aggregator chain.
    pub seq: i64,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("{0}")]
    Invalid(String, Value),
    #[error("unknown {what} {id:?}")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String, Value),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// One event to append: its type, its fields (without `seq`, `type`, `ts`) and the projection
/// statements, built from the assigned `seq` and time.
struct Entry {
    type_: &'static str,
    fields: Value,
    project: Box<dyn Fn(i64) -> Vec<OwnedSql> + Send + Sync>,
}

/// A statement with owned binds (the projection is built before the transaction borrows).
enum OwnedBind {
    Text(String),
    I64(i64),
}

struct OwnedSql(&'static str, Vec<OwnedBind>);

fn to_sql(o: &OwnedSql) -> Sql<'_> {
    let mut q = Sql::new(o.0);
    for b in &o.1 {
        q = q.bind(match b {
            OwnedBind::Text(s) => Bind::Text(Some(s)),
            OwnedBind::I64(v) => Bind::I64(Some(*v)),
        });
    }
    q
}

#[derive(sqlx::FromRow)]
struct Head {
    seq: i64,
    hash: Vec<u8>,
}

/// Appends `entries` to the chain in one transaction, with their projections; the seqs given.
async fn append(db: &Db, entries: &[Entry]) -> Result<Vec<i64>, RoutingError> {
    let mut last_err = None;
    for attempt in 0..50u64 {
        let head: Option<Head> = db
            .fetch_optional(Sql::new(
                "SELECT seq, hash FROM aggregator_chain ORDER BY seq DESC LIMIT 1",
            ))
            .await?;
        let (mut seq, mut prev) = match head {
            Some(h) => (h.seq, h.hash),
            None => (0, GENESIS.to_vec()),
        };
        let now = threadline_shared::time::now();
        let ts = sql::time_text(&now);
        // (seq, body, prev_hash, hash, type) of each new chain entry.
        type Entry = (i64, String, Vec<u8>, Vec<u8>, &'static str);
        let mut owned: Vec<Entry> = Vec::new();
        let mut projections = Vec::new();
        for e in entries {
            seq += 1;
            let mut body = e.fields.clone();
            body["seq"] = json!(seq);
            body["type"] = json!(e.type_);
            body["ts"] = json!(ts);
            let body = serde_json::to_string(&body).expect("JSON value serializes");
            let hash = link_hash(&prev, CHAIN_ID, &Uuid::nil(), body.as_bytes()).to_vec();
            owned.push((seq, body, prev.clone(), hash.clone(), e.type_));
            projections.extend((e.project)(seq));
            prev = hash;
        }
        let mut qs = Vec::new();
        for (seq, body, prev, hash, type_) in &owned {
            qs.push(
                Sql::new(
                    "INSERT INTO aggregator_chain (seq, ts, type, body, prev_hash, hash) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(*seq)
                .bind(now)
                .bind(*type_)
                .bind(body)
                .bind(Bind::Bytes(prev))
                .bind(Bind::Bytes(hash)),
            );
        }
        qs.extend(projections.iter().map(to_sql));
        match db.execute_all(qs).await {
            Ok(()) => return Ok(owned.iter().map(|o| o.0).collect()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                // Another writer took this seq: retry on the new head.
                last_err = Some(sqlx::Error::Database(d));
                tokio::time::sleep(std::time::Duration::from_millis(attempt % 7)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_err
        .map(RoutingError::from)
        .unwrap_or_else(|| RoutingError::Conflict("chain append contended".into(), Value::Null)))
}

/// Checks the aggregator chain with the gateways' verifier.
pub async fn verify_chain(db: &Db) -> Result<VerifyReport, RoutingError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        seq: i64,
        #[sqlx(rename = "type")]
        type_: String,
        body: String,
        prev_hash: Vec<u8>,
        hash: Vec<u8>,
    }
    let rows: Vec<Row> = db
        .fetch_all(Sql::new(
            "SELECT seq, type, body, prev_hash, hash FROM aggregator_chain ORDER BY seq",
        ))
        .await?;
    let mut v = Verifier::new();
    for r in rows {
        v.feed(&ChainRow {
            id: r.seq,
            gateway: CHAIN_ID.to_owned(),
            epoch: Uuid::nil().to_string(),
            seq: r.seq,
            type_: r.type_,
            body: r.body,
            prev_hash: r.prev_hash,
            hash: r.hash,
        });
    }
    Ok(v.finish())
}

fn need(field: &str, v: &str) -> Result<(), RoutingError> {
    if v.trim().is_empty() {
        return Err(RoutingError::Invalid(
            format!("{field} must not be empty"),
            json!({"field": field}),
        ));
    }
    if v.len() > 1000 {
        return Err(RoutingError::Invalid(
            format!("{field} is longer than 1000 bytes"),
            json!({"field": field}),
        ));
    }
    Ok(())
}

async fn item_exists(db: &Db, kind: &str, id: &str) -> Result<bool, RoutingError> {
    #[derive(sqlx::FromRow)]
    struct One {
        #[allow(dead_code)]
        id: i64,
    }
    let r: Option<One> = db
        .fetch_optional(
            Sql::new("SELECT id FROM items WHERE kind = $1 AND ext_id = $2")
                .bind(kind)
                .bind(id),
        )
        .await?;
    Ok(r.is_some())
}

fn hold_entry(hold_id: String, kind: HoldKind, id: String, reason: String, by: String) -> Entry {
    Entry {
        type_: "hold_placed",
        fields: json!({"hold_id": hold_id, "kind": kind.as_str(), "id": id, "reason": reason, "by": by}),
        project: Box::new(move |seq| {
            vec![OwnedSql(
                "INSERT INTO holds (hold_id, kind, item_id, reason, placed_by, placed_at, placed_seq) \
                 SELECT $1, $2, $3, $4, $5, ts, seq FROM aggregator_chain WHERE seq = $6",
                vec![
                    OwnedBind::Text(hold_id.clone()),
                    OwnedBind::Text(kind.as_str().to_owned()),
                    OwnedBind::Text(id.clone()),
                    OwnedBind::Text(reason.clone()),
                    OwnedBind::Text(by.clone()),
                    OwnedBind::I64(seq),
                ],
            )]
        }),
    }
}

fn new_hold_id() -> String {
    format!("H-{}", Uuid::new_v4().simple())
}

/// Places a hold; unknown lots, units and containers are refused (a part may be held before
/// any unit of it exists).
pub async fn place_hold(
    db: &Db,
    kind: &str,
    id: &str,
    reason: &str,
    by: &str,
) -> Result<Hold, RoutingError> {
    let Some(k) = HoldKind::parse(kind) else {
        return Err(RoutingError::Invalid(
            "kind must be lot, unit, container or part".into(),
            json!({"field": "kind", "value": kind}),
        ));
    };
    need("id", id)?;
    need("reason", reason)?;
    need("by", by)?;
    if k != HoldKind::Part && !item_exists(db, k.as_str(), id).await? {
        return Err(RoutingError::NotFound {
            what: k.as_str(),
            id: id.to_owned(),
        });
    }
    let hold_id = new_hold_id();
    append(
        db,
        &[hold_entry(
            hold_id.clone(),
            k,
            id.to_owned(),
            reason.to_owned(),
            by.to_owned(),
        )],
    )
    .await?;
    get_hold(db, &hold_id).await
}

const HOLD_COLS: &str = "hold_id, kind, item_id AS id, reason, placed_by AS by, placed_at, \
    placed_seq, released_at IS NULL AS active, released_at, release_reason, released_by, released_seq";

pub async fn get_hold(db: &Db, hold_id: &str) -> Result<Hold, RoutingError> {
    db.fetch_optional(
        Sql::new(format!("SELECT {HOLD_COLS} FROM holds WHERE hold_id = $1")).bind(hold_id),
    )
    .await?
    .ok_or_else(|| RoutingError::NotFound {
        what: "hold",
        id: hold_id.to_owned(),
    })
}

/// Releases an active hold; releasing a released hold is a 409.
pub async fn release_hold(
    db: &Db,
    hold_id: &str,
    reason: &str,
    by: &str,
) -> Result<Hold, RoutingError> {
    need("reason", reason)?;
    need("by", by)?;
    let hold = get_hold(db, hold_id).await?;
    if !hold.active {
        return Err(RoutingError::Conflict(
            "hold is already released".into(),
            json!({"hold_id": hold_id, "released_at": hold.released_at}),
        ));
    }
    let (hid, reason_s, by_s) = (hold_id.to_owned(), reason.to_owned(), by.to_owned());
    let entry = Entry {
        type_: "hold_released",
        fields: json!({"hold_id": hold_id, "reason": reason, "by": by}),
        project: Box::new(move |seq| {
            vec![OwnedSql(
                "UPDATE holds SET released_at = (SELECT ts FROM aggregator_chain WHERE seq = $1), \
                 release_reason = $2, released_by = $3, released_seq = $1 \
                 WHERE hold_id = $4 AND released_at IS NULL",
                vec![
                    OwnedBind::I64(seq),
                    OwnedBind::Text(reason_s.clone()),
                    OwnedBind::Text(by_s.clone()),
                    OwnedBind::Text(hid.clone()),
                ],
            )]
        }),
    };
    append(db, &[entry]).await?;
    get_hold(db, hold_id).await
}

/// Active holds, or every hold (newest first) with `history`; optionally of one kind / id.
pub async fn list_holds(
    db: &Db,
    history: bool,
    kind: Option<&str>,
    id: Option<&str>,
) -> Result<Vec<Hold>, RoutingError> {
    let mut q = Sql::new(format!("SELECT {HOLD_COLS} FROM holds WHERE 1 = 1"));
    if !history {
        q.push(" AND released_at IS NULL");
    }
    if let Some(k) = kind {
        let p = q.param(k);
        q.push(&format!(" AND kind = {p}"));
    }
    if let Some(i) = id {
        let p = q.param(i);
        q.push(&format!(" AND item_id = {p}"));
    }
    q.push(" ORDER BY placed_seq DESC");
    Ok(db.fetch_all(q).await?)
}

/// The active holds covering unit `serial` (see the module doc); empty for an unknown unit.
pub async fn holds_for_unit(db: &Db, serial: &str) -> Result<Vec<UnitHold>, RoutingError> {
    let active = list_holds(db, false, None, None).await?;
    if active.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(sqlx::FromRow)]
    struct P {
        part: Option<String>,
    }
    let part: Option<P> = db
        .fetch_optional(
            Sql::new("SELECT part FROM items WHERE kind = 'unit' AND ext_id = $1").bind(serial),
        )
        .await?;
    let Some(part) = part else {
        return Ok(Vec::new());
    };
    // (kind, id) of everything that reached the unit, and the containers holding it.
    let mut reach: Vec<(String, String)> = Vec::new();
    for direction in [Direction::Backward, Direction::Forward] {
        let mut req = TraceRequest::new(ItemKind::Unit, serial, direction);
        req.as_of = Some(threadline_shared::time::now());
        match trace::trace(db, &req).await {
            Ok(g) => {
                for n in g.nodes.into_iter().filter(|n| n.depth > 0) {
                    let keep = match direction {
                        Direction::Backward => matches!(n.kind, ItemKind::Lot | ItemKind::Unit),
                        Direction::Forward => n.kind == ItemKind::Container,
                    };
                    if keep {
                        reach.push((n.kind.as_str().to_owned(), n.id));
                    }
                }
            }
            Err(QueryError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut out = Vec::new();
    for h in active {
        let via = if h.kind == "unit" && h.id == serial {
            Some("direct".to_owned())
        } else if h.kind == "part" && part.part.as_deref() == Some(h.id.as_str()) {
            Some("part".to_owned())
        } else {
            reach
                .iter()
                .find(|(k, i)| *k == h.kind && *i == h.id)
                .map(|(k, i)| format!("{k} {i}"))
        };
        if let Some(via) = via {
            out.push(UnitHold { hold: h, via });
        }
    }
    Ok(out)
}

/// Holds on a lot and on every unit and container of its recall scope, in one transaction.
pub async fn hold_recall_scope(
    db: &Db,
    lot: &str,
    reason: &str,
    by: &str,
) -> Result<Vec<Hold>, RoutingError> {
    need("reason", reason)?;
    need("by", by)?;
    let scope = trace::recall(db, lot, false).await?;
    let mut entries = vec![hold_entry(
        new_hold_id(),
        HoldKind::Lot,
        lot.to_owned(),
        reason.to_owned(),
        by.to_owned(),
    )];
    for u in &scope.units {
        entries.push(hold_entry(
            new_hold_id(),
            HoldKind::Unit,
            u.clone(),
            reason.to_owned(),
            by.to_owned(),
        ));
    }
    for c in &scope.containers {
        entries.push(hold_entry(
            new_hold_id(),
            HoldKind::Container,
            c.clone(),
            reason.to_owned(),
            by.to_owned(),
        ));
    }
    let seqs = append(db, &entries).await?;
    let (first, last) = (seqs[0], seqs[seqs.len() - 1]);
    Ok(db
        .fetch_all(
            Sql::new(format!(
                "SELECT {HOLD_COLS} FROM holds WHERE placed_seq BETWEEN $1 AND $2 ORDER BY placed_seq"
            ))
            .bind(first)
            .bind(last),
        )
        .await?)
}

/// Records a disposition of a known unit.
pub async fn add_disposition(
    db: &Db,
    serial: &str,
    disposition: &str,
    reason: &str,
    by: &str,
) -> Result<Disposition, RoutingError> {
    let Ok(d) = serde_json::from_value::<DispositionKind>(Value::String(disposition.to_owned()))
    else {
        return Err(RoutingError::Invalid(
            "disposition must be scrap, rework, use_as_is or return_to_supplier".into(),
            json!({"field": "disposition", "value": disposition}),
        ));
    };
    need("reason", reason)?;
    need("by", by)?;
    if !item_exists(db, "unit", serial).await? {
        return Err(RoutingError::NotFound {
            what: "unit",
            id: serial.to_owned(),
        });
    }
    let (s, r, b) = (serial.to_owned(), reason.to_owned(), by.to_owned());
    let entry = Entry {
        type_: "disposition",
        fields: json!({"serial": serial, "disposition": d.as_str(), "reason": reason, "by": by}),
        project: Box::new(move |seq| {
            vec![OwnedSql(
                "INSERT INTO dispositions (serial, disposition, reason, decided_by, decided_at, seq) \
                 SELECT $1, $2, $3, $4, ts, seq FROM aggregator_chain WHERE seq = $5",
                vec![
                    OwnedBind::Text(s.clone()),
                    OwnedBind::Text(d.as_str().to_owned()),
                    OwnedBind::Text(r.clone()),
                    OwnedBind::Text(b.clone()),
                    OwnedBind::I64(seq),
                ],
            )]
        }),
    };
    let seq = append(db, &[entry]).await?[0];
    Ok(db
        .fetch_optional(Sql::new(format!("{DISPOSITION_SELECT} WHERE seq = $1")).bind(seq))
        .await?
        .expect("the disposition was just written"))
}

const DISPOSITION_SELECT: &str = "SELECT serial, disposition, reason, decided_by AS by, \
    decided_at AS at, seq FROM dispositions";

/// A unit's dispositions, oldest first (the last one is the current decision).
pub async fn dispositions_for_unit(
    db: &Db,
    serial: &str,
) -> Result<Vec<Disposition>, RoutingError> {
    Ok(db
        .fetch_all(
            Sql::new(format!(
                "{DISPOSITION_SELECT} WHERE serial = $1 ORDER BY seq"
            ))
            .bind(serial),
        )
        .await?)
}
