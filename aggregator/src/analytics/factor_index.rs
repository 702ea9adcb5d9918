//! The factor index: common-cause counts of a population of millions of units, by summing hours.
//!
//! For every hour of first sighting (`YYYY-MM-DDTHH`, UTC) and part, the index holds how many
//! units there are and how many of them have each factor — the factors of
//! [`super::common_cause`], read from each unit's own side exactly as the complaint units' are.
//! A population (parts, first-seen span) is then counted as the sum of the hours it covers
//! whole, plus its units in the hours it covers in part, counted from their side. Exact, as long
//! as an hour's rows still describe its units:
//!
//! - triggers (migration `0080_factor_index`) write every change that can alter a unit's factors
//!   into `factor_changes` — an edge that consumed or assembled something into an item, an
//!   operation, a new unit, an item whose supplier, batch, work order, part, first sighting or
//!   id changed — but only once the index holds an hour, so a plant without it pays nothing;
//! - [`catch_up`] (the aggregator's index loop, every 10 s) drains them: each changed item is
//!   walked up the genealogy to the units it went into, their hours are marked dirty and built
//!   again; hours not built yet are built once they are [`SETTLE`] old;
//! - a query treats the hours of changes not drained yet as dirty too ([`covered`]): it never
//!   sums an hour that may be out of date.
//!
//! Building an hour costs what counting its units from their side costs (a few indexed reads
//! per unit); an hour's rows are its factors, a few dozen per part.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Duration, DurationRound as _, Utc};

use super::common_cause::{Key, factors_of};
use crate::store::Db;
use crate::store::sql::{self, Sql};
use crate::trace::QueryError;

/// Hours are built once they ended this long ago (the current hour changes all the time).
pub const SETTLE: Duration = Duration::minutes(10);
/// Changes drained per batch.
const DRAIN_BATCH: i64 = 20_000;
/// With more changes than this waiting, a query does not use the index (resolving them would
/// cost more than it saves); the index loop drains them within seconds.
const PENDING_LIMIT: i64 = 20_000;
/// Rows per multi-row INSERT.
const INSERT_ROWS: usize = 500;

/// What one [`catch_up`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Changes drained.
    pub drained: u64,
    /// Built hours marked dirty by them.
    pub marked: u64,
    /// Hours built (new or again).
    pub built: u64,
    /// Hours still waiting (the budget ran out).
    pub waiting: u64,
}

/// The hours a population covers whole in the index, and their sums.
#[derive(Debug, Default)]
pub(crate) struct Covered {
    /// Time ranges `[from, to)` of the clean hours summed (consecutive hours merged).
    pub ranges: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Units in them.
    pub units: u64,
    /// Units in them with each factor.
    pub counts: HashMap<Key, u64>,
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    id: i64,
    item_id: i64,
    #[sqlx(try_from = "sql::OptTime")]
    seen_at: Option<String>,
}

#[derive(sqlx::FromRow)]
struct HourRow {
    hour: String,
    dirty: i64,
}

#[derive(sqlx::FromRow)]
struct SeenRow {
    #[sqlx(try_from = "sql::OptTime")]
    first_seen_at: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ParentRow {
    parent_id: i64,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    id: i64,
    part: Option<String>,
    work_order: Option<String>,
}

#[derive(sqlx::FromRow)]
struct SumRow {
    kind: String,
    factor: String,
    n: i64,
}

#[derive(sqlx::FromRow)]
struct TotalRow {
    n: Option<i64>,
}

/// The hour (`YYYY-MM-DDTHH`) of a canonical timestamp text.
fn hour_of(ts: &str) -> Option<String> {
    (ts.len() >= 13).then(|| ts[..13].to_owned())
}

fn hour_start(hour: &str) -> Option<DateTime<Utc>> {
    threadline_shared::time::parse(&format!("{hour}:00:00Z")).ok()
}

fn hour_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H").to_string()
}

/// The kinds of factor as the analysis names them (`Key` holds a `&'static str`).
fn kind_name(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "lot" => "lot",
        "component_lot" => "component_lot",
        "supplier" => "supplier",
        "supplier_batch" => "supplier_batch",
        "equipment" => "equipment",
        "operator" => "operator",
        "recipe" => "recipe",
        "work_order" => "work_order",
        "station_hour" => "station_hour",
        _ => return None,
    })
}

/// The hours whose units the changed items may have changed: each item walked up the
/// `consumed` / `assembled` edges to everything it went into (any depth), the first sightings of
/// the units among them, and the old first sightings the changes carry.
async fn hours_of_changes(db: &Db, rows: &[ChangeRow]) -> sqlx::Result<BTreeSet<String>> {
    let dialect = db.dialect();
    let mut hours: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.seen_at.as_deref().and_then(hour_of))
        .collect();
    let mut reached: HashSet<i64> = rows.iter().map(|r| r.item_id).collect();
    let mut frontier: Vec<i64> = reached.iter().copied().collect();
    for _depth in 0..50 {
        if frontier.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for chunk in frontier.chunks(dialect.max_id_list()) {
            let mut q = Sql::new("");
            let near = dialect.id_in(&mut q, "child_id", chunk);
            q.push(&format!(
                "SELECT parent_id FROM edges \
                 WHERE {near} AND relation IN ('consumed', 'assembled')"
            ));
            for p in db.fetch_all::<ParentRow>(q).await? {
                if reached.insert(p.parent_id) {
                    next.push(p.parent_id);
                }
            }
        }
        frontier = next;
    }
    let ids: Vec<i64> = reached.into_iter().collect();
    for chunk in ids.chunks(dialect.max_id_list()) {
        let mut q = Sql::new("");
        let near = dialect.id_in(&mut q, "id", chunk);
        q.push(&format!(
            "SELECT first_seen_at FROM items \
             WHERE {near} AND kind = 'unit' AND first_seen_at IS NOT NULL"
        ));
        for r in db.fetch_all::<SeenRow>(q).await? {
            if let Some(h) = r.first_seen_at.as_deref().and_then(hour_of) {
                hours.insert(h);
            }
        }
    }
    Ok(hours)
}

/// `(col = $a OR col = $b …)` over `values`, binding into `q`.
fn any_of<'a>(q: &mut Sql<'a>, col: &str, values: &'a [String]) -> String {
    let ps: Vec<String> = values.iter().map(|v| q.param(v)).collect();
    format!("{col} IN ({})", ps.join(", "))
}

/// The built hours among `hours`, with their dirty counts.
async fn built(db: &Db, hours: &[String]) -> sqlx::Result<HashMap<String, i64>> {
    let mut out = HashMap::new();
    for chunk in hours.chunks(INSERT_ROWS) {
        let mut q = Sql::new("");
        let within = any_of(&mut q, "hour", chunk);
        q.push(&format!(
            "SELECT hour, dirty FROM factor_index_hours WHERE {within}"
        ));
        for r in db.fetch_all::<HourRow>(q).await? {
            out.insert(r.hour, r.dirty);
        }
    }
    Ok(out)
}

/// Drains one batch of changes: marks the built hours they reach dirty (and deletes them, in
/// one transaction). Returns how many were drained and the hours reached that are not built.
async fn drain_batch(db: &Db, progress: &mut Progress) -> sqlx::Result<(u64, BTreeSet<String>)> {
    let rows: Vec<ChangeRow> = db
        .fetch_all(
            Sql::new("SELECT id, item_id, seen_at FROM factor_changes ORDER BY id LIMIT $1")
                .bind(DRAIN_BATCH),
        )
        .await?;
    if rows.is_empty() {
        return Ok((0, BTreeSet::new()));
    }
    let hours: Vec<String> = hours_of_changes(db, &rows).await?.into_iter().collect();
    let known = built(db, &hours).await?;
    let marked: Vec<String> = hours
        .iter()
        .filter(|h| known.contains_key(*h))
        .cloned()
        .collect();
    let unbuilt: BTreeSet<String> = hours
        .into_iter()
        .filter(|h| !known.contains_key(h))
        .collect();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let dialect = db.dialect();
    let mut qs = Vec::new();
    for chunk in marked.chunks(INSERT_ROWS) {
        let mut q = Sql::new("");
        let within = any_of(&mut q, "hour", chunk);
        q.push(&format!(
            "UPDATE factor_index_hours SET dirty = dirty + 1 WHERE {within}"
        ));
        qs.push(q);
    }
    for chunk in ids.chunks(dialect.max_id_list()) {
        let mut q = Sql::new("");
        let near = dialect.id_in(&mut q, "id", chunk);
        q.push(&format!("DELETE FROM factor_changes WHERE {near}"));
        qs.push(q);
    }
    db.execute_all(qs).await?;
    progress.drained += rows.len() as u64;
    progress.marked += marked.len() as u64;
    Ok((rows.len() as u64, unbuilt))
}

/// Builds one hour from its units' side, replacing what the index held for it. The hour's
/// dirty count is read before its units and only that much is cleared: a change drained while
/// it builds leaves it dirty.
pub async fn build_hour(db: &Db, hour: &str) -> Result<(), QueryError> {
    let start = hour_start(hour).ok_or_else(|| QueryError::Data(format!("bad hour {hour:?}")))?;
    let seen: i64 = built(db, &[hour.to_owned()])
        .await?
        .get(hour)
        .copied()
        .unwrap_or(0);
    let members: Vec<MemberRow> = db
        .fetch_all(
            Sql::new(
                "SELECT id, part, work_order FROM items \
                 WHERE kind = 'unit' AND first_seen_at >= $1 AND first_seen_at < $2",
            )
            .bind(start)
            .bind(start + Duration::hours(1)),
        )
        .await?;
    let part_of: HashMap<i64, String> = members
        .iter()
        .map(|m| (m.id, m.part.clone().unwrap_or_default()))
        .collect();
    let roots: Vec<(i64, Option<String>)> =
        members.into_iter().map(|m| (m.id, m.work_order)).collect();
    let (factors, _) = factors_of(db, &roots).await?;
    let mut units: HashMap<&str, i64> = HashMap::new();
    for p in part_of.values() {
        *units.entry(p.as_str()).or_default() += 1;
    }
    let mut counts: HashMap<(&str, &str, &str), i64> = HashMap::new();
    for ((kind, factor), having) in &factors {
        for u in having {
            if let Some(p) = part_of.get(u) {
                *counts
                    .entry((p.as_str(), kind, factor.as_str()))
                    .or_default() += 1;
            }
        }
    }

    let mut qs = vec![
        Sql::new("DELETE FROM factor_index WHERE hour = $1").bind(hour),
        Sql::new("DELETE FROM factor_index_units WHERE hour = $1").bind(hour),
    ];
    let unit_rows: Vec<(&str, i64)> = units.into_iter().collect();
    for chunk in unit_rows.chunks(INSERT_ROWS) {
        let mut q = Sql::new("");
        let values: Vec<String> = chunk
            .iter()
            .map(|(p, n)| format!("({}, {}, {})", q.param(hour), q.param(*p), q.param(*n)))
            .collect();
        q.push(&format!(
            "INSERT INTO factor_index_units (hour, part, n) VALUES {}",
            values.join(", ")
        ));
        qs.push(q);
    }
    let rows: Vec<((&str, &str, &str), i64)> = counts.into_iter().collect();
    for chunk in rows.chunks(INSERT_ROWS) {
        let mut q = Sql::new("");
        let values: Vec<String> = chunk
            .iter()
            .map(|((p, k, f), n)| {
                format!(
                    "({}, {}, {}, {}, {})",
                    q.param(hour),
                    q.param(*p),
                    q.param(*k),
                    q.param(*f),
                    q.param(*n)
                )
            })
            .collect();
        q.push(&format!(
            "INSERT INTO factor_index (hour, part, kind, factor, n) VALUES {}",
            values.join(", ")
        ));
        qs.push(q);
    }
    qs.push(
        Sql::new(
            "INSERT INTO factor_index_hours (hour, dirty) VALUES ($1, 0) \
             ON CONFLICT (hour) DO UPDATE SET dirty = factor_index_hours.dirty - $2, \
             built_at = excluded.built_at",
        )
        .bind(hour)
        .bind(seen),
    );
    Ok(db.execute_all(qs).await?)
}

/// The hours that have units first seen in them and ended before `until`, from `after` on
/// (one index seek per hour that has units).
async fn hours_with_units(
    db: &Db,
    after: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
) -> sqlx::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut t = after;
    loop {
        let q = match t {
            Some(t) => Sql::new(
                "SELECT MIN(first_seen_at) AS first_seen_at FROM items \
                 WHERE kind = 'unit' AND first_seen_at >= $1 AND first_seen_at < $2",
            )
            .bind(t)
            .bind(until),
            None => Sql::new(
                "SELECT MIN(first_seen_at) AS first_seen_at FROM items \
                 WHERE kind = 'unit' AND first_seen_at < $1",
            )
            .bind(until),
        };
        let r: Vec<SeenRow> = db.fetch_all(q).await?;
        let Some(h) = r
            .into_iter()
            .next()
            .and_then(|r| r.first_seen_at)
            .as_deref()
            .and_then(hour_of)
        else {
            break;
        };
        let Some(start) = hour_start(&h) else { break };
        if start + Duration::hours(1) > until {
            break;
        }
        out.push(h);
        t = Some(start + Duration::hours(1));
    }
    Ok(out)
}

/// The state the index loop keeps between rounds: how far the plant's hours were scanned.
#[derive(Debug, Default)]
pub struct Cursor {
    scanned_until: Option<DateTime<Utc>>,
    /// Hours found by draining that are not built yet.
    found: BTreeSet<String>,
}

/// One round of the index loop: drains every change, then builds the dirty hours and the
/// settled hours not built yet, oldest first, until `budget` has passed. `now` decides which
/// hours are settled.
pub async fn catch_up(
    db: &Db,
    cursor: &mut Cursor,
    now: DateTime<Utc>,
    budget: std::time::Duration,
) -> Result<Progress, QueryError> {
    let began = std::time::Instant::now();
    let mut progress = Progress::default();
    loop {
        let (n, unbuilt) = drain_batch(db, &mut progress).await?;
        cursor.found.extend(unbuilt);
        if n == 0 || began.elapsed() > budget {
            break;
        }
    }
    let until = (now - SETTLE)
        .duration_trunc(Duration::hours(1))
        .unwrap_or(now - SETTLE);
    let mut todo: BTreeSet<String> = std::mem::take(&mut cursor.found);
    let dirty: Vec<HourRow> = db
        .fetch_all(Sql::new(
            "SELECT hour, dirty FROM factor_index_hours WHERE dirty > 0",
        ))
        .await?;
    todo.extend(dirty.into_iter().map(|r| r.hour));
    let after = cursor.scanned_until;
    if after.is_none_or(|a| a < until) {
        let fresh = hours_with_units(db, after, until).await?;
        let known = built(db, &fresh).await?;
        todo.extend(fresh.into_iter().filter(|h| !known.contains_key(h)));
        cursor.scanned_until = Some(until);
    }
    let todo: Vec<String> = todo
        .into_iter()
        .filter(|h| hour_start(h).is_some_and(|s| s + Duration::hours(1) <= until))
        .collect();
    for (i, hour) in todo.iter().enumerate() {
        if began.elapsed() > budget {
            // The rest next round.
            cursor.found.extend(todo[i..].iter().cloned());
            progress.waiting = (todo.len() - i) as u64;
            break;
        }
        build_hour(db, hour).await?;
        progress.built += 1;
    }
    Ok(progress)
}

/// Builds the whole index now (every settled hour), draining every change: the bulk load's
/// last step, and the first round of a loop on an existing plant. Calls `progress` per round.
pub async fn build_all(
    db: &Db,
    now: DateTime<Utc>,
    mut progress: impl FnMut(&Progress),
) -> Result<Progress, QueryError> {
    let mut cursor = Cursor::default();
    let mut total = Progress::default();
    loop {
        let p = catch_up(db, &mut cursor, now, std::time::Duration::from_secs(10)).await?;
        total.drained += p.drained;
        total.marked += p.marked;
        total.built += p.built;
        total.waiting = p.waiting;
        progress(&total);
        if p.waiting == 0 {
            return Ok(total);
        }
    }
}

/// Empties the index (`[database] factor_index = false`): the triggers stop recording.
pub async fn clear(db: &Db) -> sqlx::Result<()> {
    db.execute_all(vec![
        Sql::new("DELETE FROM factor_index_hours"),
        Sql::new("DELETE FROM factor_index_units"),
        Sql::new("DELETE FROM factor_index"),
        Sql::new("DELETE FROM factor_changes"),
    ])
    .await
}

/// The clean hours of the index that a population (`parts`, first seen in `[from, to]`; an
/// empty `parts` = every part) covers whole, with the sums of their units and factors. `None`
/// when it covers none (or too many changes wait to be drained).
pub(crate) async fn covered(
    db: &Db,
    parts: &[String],
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<Covered>> {
    let pending: Vec<TotalRow> = db
        .fetch_all(Sql::new(
            "SELECT COUNT(*) AS n FROM (SELECT 1 FROM factor_changes LIMIT 20001) c",
        ))
        .await?;
    if pending.first().and_then(|r| r.n).unwrap_or(0) > PENDING_LIMIT {
        return Ok(None);
    }
    let mut q = Sql::new("SELECT hour, dirty FROM factor_index_hours WHERE dirty = 0");
    let (lo, hi) = (from.map(hour_text), to.map(hour_text));
    if let Some(lo) = &lo {
        let p = q.param(lo);
        q.push(&format!(" AND hour >= {p}"));
    }
    if let Some(hi) = &hi {
        let p = q.param(hi);
        q.push(&format!(" AND hour <= {p}"));
    }
    q.push(" ORDER BY hour");
    let mut clean: Vec<String> = db
        .fetch_all::<HourRow>(q)
        .await?
        .into_iter()
        .map(|r| r.hour)
        .collect();
    if clean.is_empty() {
        return Ok(None);
    }
    let waiting: Vec<ChangeRow> = db
        .fetch_all(Sql::new("SELECT id, item_id, seen_at FROM factor_changes"))
        .await?;
    if !waiting.is_empty() {
        let stale = hours_of_changes(db, &waiting).await?;
        clean.retain(|h| !stale.contains(h));
    }
    // Whole hours only: the first and last may be cut by the span.
    let mut ranges: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut spans: Vec<(String, String)> = Vec::new();
    for h in &clean {
        let Some(s) = hour_start(h) else { continue };
        let e = s + Duration::hours(1);
        if from.is_some_and(|f| s < f) || to.is_some_and(|t| e > t) {
            continue;
        }
        match (ranges.last_mut(), spans.last_mut()) {
            (Some(r), Some(sp)) if r.1 == s => {
                r.1 = e;
                sp.1 = h.clone();
            }
            _ => {
                ranges.push((s, e));
                spans.push((h.clone(), h.clone()));
            }
        }
    }
    if ranges.is_empty() {
        return Ok(None);
    }
    let mut out = Covered {
        ranges,
        ..Covered::default()
    };
    for (table, grouped) in [("factor_index_units", false), ("factor_index", true)] {
        let mut q = Sql::new("");
        let within: Vec<String> = spans
            .iter()
            .map(|(a, b)| format!("(hour >= {} AND hour <= {})", q.param(a), q.param(b)))
            .collect();
        let mut pred = format!("({})", within.join(" OR "));
        if !parts.is_empty() {
            pred.push_str(&format!(" AND {}", any_of(&mut q, "part", parts)));
        }
        if grouped {
            q.push(&format!(
                "SELECT kind, factor, CAST(SUM(n) AS BIGINT) AS n FROM {table} \
                 WHERE {pred} GROUP BY kind, factor"
            ));
            for r in db.fetch_all::<SumRow>(q).await? {
                if let Some(kind) = kind_name(&r.kind) {
                    out.counts.insert((kind, r.factor), r.n.max(0) as u64);
                }
            }
        } else {
            q.push(&format!(
                "SELECT CAST(SUM(n) AS BIGINT) AS n FROM {table} WHERE {pred}"
            ));
            let r: Vec<TotalRow> = db.fetch_all(q).await?;
            out.units = r.first().and_then(|r| r.n).unwrap_or(0).max(0) as u64;
        }
    }
    Ok(Some(out))
}

/// Seconds between two rounds of the index loop.
pub const INTERVAL_S: u64 = 10;
/// A round's building stops after this long (the rest waits for the next round).
const ROUND_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
/// The PostgreSQL advisory lock the index loop holds: one aggregator of a plant builds.
const ADVISORY_LOCK: i64 = 0x7472_6163_6566_6978; // "tracefix"

/// The aggregator's index loop (`[database] factor_index = true`): a round every
/// [`INTERVAL_S`] until `cancel`. On PostgreSQL only the aggregator holding an advisory lock
/// builds (several aggregators share one database); the others try again each round. A failed
/// round is logged and tried again.
pub async fn run(db: Db, cancel: tokio_util::sync::CancellationToken) {
    let mut cursor = Cursor::default();
    let mut lock: Option<sqlx::pool::PoolConnection<sqlx::Postgres>> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(INTERVAL_S));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Db::Postgres(pool) = &db
            && lock.is_none()
        {
            match take_lock(pool).await {
                Ok(conn) => lock = conn,
                Err(e) => {
                    tracing::warn!(error = %e, "factor index: advisory lock not checked");
                    continue;
                }
            }
            if lock.is_none() {
                continue; // another aggregator builds
            }
        }
        let round = tokio::select! {
            _ = cancel.cancelled() => return,
            r = catch_up(&db, &mut cursor, threadline_shared::time::now(), ROUND_BUDGET) => r,
        };
        match round {
            Ok(p) if p.built > 0 || p.marked > 0 => tracing::info!(
                drained = p.drained,
                marked_dirty = p.marked,
                built = p.built,
                waiting = p.waiting,
                "factor index updated"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "factor index round failed; next try in {INTERVAL_S} s");
                // The lock's connection may be the broken part: take it again.
                lock = None;
            }
        }
    }
}

async fn take_lock(
    pool: &sqlx::PgPool,
) -> sqlx::Result<Option<sqlx::pool::PoolConnection<sqlx::Postgres>>> {
    let mut conn = pool.acquire().await?;
    let (held,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
        .bind(ADVISORY_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    Ok(held.then_some(conn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_the_first_thirteen_characters() {
        assert_eq!(
            hour_of("2026-01-05T06:59:59.999999Z").as_deref(),
            Some("2026-01-05T06")
        );
        assert_eq!(hour_of("2026-01"), None);
        let s = hour_start("2026-01-05T06").unwrap();
        assert_eq!(hour_text(s), "2026-01-05T06");
        assert_eq!(sql::time_text(&s), "2026-01-05T06:00:00.000000Z");
    }
}
