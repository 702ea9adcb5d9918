//! Benchmark data generator: writes a realistic plant history straight into the aggregator's
//! database (bypassing ingest), fast enough for 10 M units.
//!
//! The plant: every product is a 5-level BOM chain — a finished unit (`SN…`, level 1) assembled
//! from a level-2 sub-assembly, assembled from level 3, … down to level 5. So `units` unit items
//! are `units / 5` products. Every unit consumes one lot of its level's part (lots of 2 000);
//! level-5 units also consume a fastener lot shared by 20 000 products, so fastener lot
//! `FAST-000000` reaches 100 000 units through all five levels. Finished units are packed 20 to
//! a case, cases 40 to a pallet, pallets shipped two per shipment to one of 300 customers. Each
//! finished unit has 3 operations, each sub-assembly 1, each with 10 parameters (~1 % out of
//! spec) and 2 environment values; each finished unit has a quality check. Every 1 000th product
//! was first packed into a case and unpacked again (a closed edge). Readings: one press
//! pressure per finished unit.
//!
//! PostgreSQL: `COPY … FROM STDIN` in 4 MB batches, loaded by a second task while this one
//! generates (both cores work), without foreign-key triggers (`session_replication_role =
//! replica`: the data is consistent by construction), with secondary indexes dropped during the
//! load and rebuilt after (then VACUUM ANALYZE); readings' day partitions are made first.
//! SQLite: multi-row INSERTs in large transactions. The target database must be empty; the
//! schema is created with the aggregator's migrations.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Levels of the BOM chain.
pub const LEVELS: u64 = 5;
/// Products per part lot.
pub const LOT_SIZE: u64 = 2_000;
/// Products per fastener lot (each reaches 5 × this many units).
pub const FASTENER_LOT_PRODUCTS: u64 = 20_000;
pub const CASE_SIZE: u64 = 20;
pub const PALLET_SIZE: u64 = 40;
pub const CUSTOMERS: u64 = 300;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Unit items in total (all levels); rounded down to a multiple of 5.
    pub units: u64,
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub rows: HashMap<&'static str, u64>,
    pub products: u64,
}

#[derive(Clone, Copy)]
enum Val<'a> {
    I(i64),
    F(f64),
    T(&'a str),
    B(bool),
    Null,
}

const TABLES: &[(&str, &[&str])] = &[
    (
        "items",
        &[
            "id",
            "kind",
            "ext_id",
            "part",
            "placeholder",
            "supplier",
            "supplier_batch",
            "qty",
            "work_order",
            "line",
            "level",
            "customer",
            "shipped_at",
            "first_seen_at",
        ],
    ),
    (
        "edges",
        &[
            "id",
            "parent_id",
            "child_id",
            "relation",
            "qty",
            "station",
            "valid_from",
            "valid_to",
            "closed_reason",
        ],
    ),
    (
        "operations",
        &[
            "id",
            "unit_id",
            "station",
            "operation",
            "equipment",
            "operator",
            "recipe",
            "started_at",
            "completed_at",
            "result",
            "defect_code",
            "out_of_spec",
            "environment",
            "gateway",
        ],
    ),
    (
        "operation_parameters",
        &[
            "operation_id",
            "name",
            "value_num",
            "value_text",
            "unit",
            "lsl",
            "usl",
            "in_spec",
        ],
    ),
    ("operation_materials", &["operation_id", "lot_id", "qty"]),
    (
        "quality_checks",
        &[
            "id",
            "unit_id",
            "characteristic",
            "value_num",
            "value_text",
            "unit_of_measure",
            "lsl",
            "usl",
            "result",
            "station",
            "operator",
            "checked_at",
        ],
    ),
    (
        "readings",
        &[
            "gateway",
            "epoch",
            "seq",
            "ts",
            "device",
            "tag",
            "value_num",
            "value_text",
            "unit",
            "quality",
            "error",
        ],
    ),
];

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Where rows go.
enum Sink {
    Pg {
        pool: PgPool,
        bufs: Vec<String>,
        rows: Vec<u64>,
        /// The COPY task: generation (this task) and loading (the database) overlap, so both
        /// cores work. Bounded, so generation cannot run ahead by more than a few buffers.
        copies: Option<tokio::sync::mpsc::Sender<(usize, String)>>,
        copier: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    },
    Sqlite {
        pool: SqlitePool,
        bufs: Vec<Vec<String>>,
        rows: Vec<u64>,
    },
}

const PG_FLUSH_BYTES: usize = 4 << 20;
const SQLITE_ROWS_PER_STMT: usize = 500;

fn pg_escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn sql_literal(out: &mut String, v: Val<'_>) {
    match v {
        Val::I(i) => {
            let _ = write!(out, "{i}");
        }
        Val::F(f) => {
            let _ = write!(out, "{f:?}");
        }
        Val::B(b) => out.push(if b { '1' } else { '0' }),
        Val::Null => out.push_str("NULL"),
        Val::T(s) => {
            out.push('\'');
            out.push_str(&s.replace('\'', "''"));
            out.push('\'');
        }
    }
}

impl Sink {
    async fn row(&mut self, table: usize, vals: &[Val<'_>]) -> anyhow::Result<()> {
        match self {
            Sink::Pg { bufs, rows, .. } => {
                let b = &mut bufs[table];
                for (i, v) in vals.iter().enumerate() {
                    if i > 0 {
                        b.push('\t');
                    }
                    match *v {
                        Val::I(x) => {
                            let _ = write!(b, "{x}");
                        }
                        Val::F(x) => {
                            let _ = write!(b, "{x:?}");
                        }
                        Val::T(s) => pg_escape(b, s),
                        Val::B(x) => b.push(if x { 't' } else { 'f' }),
                        Val::Null => b.push_str("\\N"),
                    }
                }
                b.push('\n');
                rows[table] += 1;
                if b.len() >= PG_FLUSH_BYTES {
                    self.flush_upto(table).await?;
                }
            }
            Sink::Sqlite { bufs, rows, .. } => {
                let mut s = String::from("(");
                for (i, v) in vals.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    sql_literal(&mut s, *v);
                }
                s.push(')');
                bufs[table].push(s);
                rows[table] += 1;
                if bufs[table].len() >= SQLITE_ROWS_PER_STMT {
                    self.flush_upto(table).await?;
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self, table: usize) -> anyhow::Result<()> {
        match self {
            Sink::Pg { bufs, copies, .. } => {
                if bufs[table].is_empty() {
                    return Ok(());
                }
                let data = std::mem::take(&mut bufs[table]);
                let Some(tx) = copies else {
                    anyhow::bail!("the COPY task has already finished");
                };
                if tx.send((table, data)).await.is_err() {
                    // The copier stopped on an error: report it.
                    return self.finish_copies().await;
                }
            }
            Sink::Sqlite { pool, bufs, .. } => {
                if bufs[table].is_empty() {
                    return Ok(());
                }
                let (name, cols) = TABLES[table];
                let vals = std::mem::take(&mut bufs[table]);
                let sql = format!(
                    "INSERT INTO {name} ({}) VALUES {}",
                    cols.join(", "),
                    vals.join(",")
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&*pool)
                    .await
                    .with_context(|| format!("INSERT {name}"))?;
            }
        }
        Ok(())
    }

    /// Flushes `table` after every table before it: `TABLES` is in foreign-key order, so a row
    /// never reaches the database before the rows it references.
    async fn flush_upto(&mut self, table: usize) -> anyhow::Result<()> {
        for t in 0..=table {
            self.flush(t).await?;
        }
        Ok(())
    }

    async fn flush_all(&mut self) -> anyhow::Result<()> {
        for t in 0..TABLES.len() {
            self.flush(t).await?;
        }
        self.finish_copies().await
    }

    /// Waits until every queued COPY has been loaded (PostgreSQL); its error if one failed.
    async fn finish_copies(&mut self) -> anyhow::Result<()> {
        if let Sink::Pg { copies, copier, .. } = self {
            copies.take();
            if let Some(h) = copier.take() {
                h.await.context("COPY task")??;
            }
        }
        Ok(())
    }
}

/// Loads buffers with `COPY … FROM STDIN`, in the order they were queued (which is foreign-key
/// order: `flush_upto` queues a table's rows after those of every table they reference).
async fn run_copies(
    pool: PgPool,
    mut rx: tokio::sync::mpsc::Receiver<(usize, String)>,
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await.context("COPY connection")?;
    while let Some((table, data)) = rx.recv().await {
        let (name, cols) = TABLES[table];
        let stmt = format!("COPY {name} ({}) FROM STDIN", cols.join(", "));
        let mut copy = conn
            .copy_in_raw(&stmt)
            .await
            .with_context(|| format!("COPY {name}"))?;
        copy.send(data.as_bytes()).await?;
        copy.finish()
            .await
            .with_context(|| format!("COPY {name}"))?;
    }
    Ok(())
}

const ITEMS: usize = 0;
const EDGES: usize = 1;
const OPS: usize = 2;
const PARAMS: usize = 3;
const MATS: usize = 4;
const QC: usize = 5;
const READINGS: usize = 6;

/// Parameters of every operation: name, unit, lsl, usl, nominal.
const PARAM_DEFS: &[(&str, &str, f64, f64, f64)] = &[
    ("press.pressure", "bar", 180.0, 220.0, 200.0),
    ("press.force_peak", "kN", 8.0, 12.5, 10.0),
    ("press.stroke", "mm", 41.0, 43.0, 42.0),
    ("press.speed", "mm/s", 9.0, 11.0, 10.0),
    ("press.dwell", "ms", 180.0, 260.0, 220.0),
    ("screw.torque", "Nm", 4.5, 5.5, 5.0),
    ("screw.angle", "deg", 700.0, 780.0, 740.0),
    ("temp.part", "°C", 18.0, 30.0, 23.0),
    ("vision.offset", "mm", -0.2, 0.2, 0.0),
    ("leak.rate", "ml/min", 0.0, 2.0, 0.8),
];

/// parent, child, relation, qty, station, valid_from, valid_to
type PendingEdge = (
    i64,
    i64,
    &'static str,
    Option<f64>,
    &'static str,
    String,
    Option<String>,
);

#[allow(clippy::too_many_arguments)]
fn edge(
    out: &mut Vec<PendingEdge>,
    parent: i64,
    child: i64,
    rel: &'static str,
    qty: Option<f64>,
    station: &'static str,
    at: String,
    closed: Option<String>,
) {
    out.push((parent, child, rel, qty, station, at, closed));
}

/// Generates the plant into `url` (postgres://… or sqlite://…), which must hold no plant data.
pub async fn generate(url: &str, plan: &Plan) -> anyhow::Result<Written> {
    let products = plan.units / LEVELS;
    let mut sink = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Session settings for a bulk load of data that is consistent by construction:
        // no foreign-key trigger per row (`session_replication_role = replica`, superuser
        // only), no WAL flush per COPY, and memory for the index rebuilds at the end.
        let opts: PgConnectOptions = url.parse().context("bad PostgreSQL url")?;
        let opts = opts.options([
            ("synchronous_commit", "off"),
            ("maintenance_work_mem", "1GB"),
            ("session_replication_role", "replica"),
        ]);
        let pool = match PgPoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "bulk-load session settings refused (not a superuser?); loading with foreign-key checks");
                PgPoolOptions::new()
                    .max_connections(2)
                    .connect(url)
                    .await
                    .context("connecting to PostgreSQL")?
            }
        };
        sqlx::migrate!("../aggregator/migrations/postgres")
            .run(&pool)
            .await
            .context("migrating")?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let copier = tokio::spawn(run_copies(pool.clone(), rx));
        Sink::Pg {
            pool,
            bufs: vec![String::new(); TABLES.len()],
            rows: vec![0; TABLES.len()],
            copies: Some(tx),
            copier: Some(copier),
        }
    } else {
        let opts: SqliteConnectOptions = url
            .parse::<SqliteConnectOptions>()
            .context("bad SQLite url")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Off);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .context("opening SQLite")?;
        sqlx::migrate!("../aggregator/migrations/sqlite")
            .run(&pool)
            .await
            .context("migrating")?;
        Sink::Sqlite {
            pool,
            bufs: vec![Vec::new(); TABLES.len()],
            rows: vec![0; TABLES.len()],
        }
    };

    // Refuse to mix with existing data: the generator assigns ids itself.
    let existing: i64 = match &sink {
        Sink::Pg { pool, .. } => {
            sqlx::query_scalar("SELECT count(*) FROM items")
                .fetch_one(pool)
                .await?
        }
        Sink::Sqlite { pool, .. } => {
            sqlx::query_scalar("SELECT count(*) FROM items")
                .fetch_one(pool)
                .await?
        }
    };
    if existing > 0 {
        anyhow::bail!("the database already holds {existing} items; use an empty database");
    }

    // Drop secondary indexes during the load (PostgreSQL); rebuilt from their saved definitions.
    let mut saved_indexes: Vec<(String, String)> = Vec::new();
    if let Sink::Pg { pool, .. } = &sink {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i \
             WHERE i.schemaname = current_schema() AND i.tablename IN ('items','edges','operations','operation_parameters','operation_materials','quality_checks','readings') \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        )
        .fetch_all(pool)
        .await?;
        for (name, _) in &rows {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX {name}")))
                .execute(pool)
                .await?;
        }
        saved_indexes = rows;
    }
    if let Sink::Sqlite { pool, .. } = &sink {
        // One long transaction would be fastest but holds everything in the WAL; batches of
        // statements under synchronous=OFF are close enough.
        sqlx::raw_sql("PRAGMA foreign_keys = OFF")
            .execute(pool)
            .await?;
    }

    let mut rng = StdRng::seed_from_u64(plan.seed);
    let t0: DateTime<Utc> =
        DateTime::parse_from_rfc3339("2026-01-05T06:00:00Z").map(|t| t.with_timezone(&Utc))?;
    if let Sink::Pg { pool, .. } = &sink {
        // `readings` is partitioned by day: make the partitions of the generated history, or
        // every reading would land in the default partition.
        let last = t0 + Duration::seconds((products * 6) as i64) + Duration::days(1);
        sqlx::query(
            "SELECT threadline_ensure_readings_partition(d::date) \
             FROM generate_series($1::date, $2::date, interval '1 day') AS d",
        )
        .bind(t0.date_naive())
        .bind(last.date_naive())
        .execute(pool)
        .await
        .context("creating the readings partitions")?;
    }

    // Id layout (explicit, so edges can be written without lookups).
    let unit_base: i64 = 1;
    let unit_id = |p: u64, level: u64| unit_base + (p * LEVELS + (level - 1)) as i64;
    let lot_base = unit_base + (products * LEVELS) as i64;
    let part_lots = products.div_ceil(LOT_SIZE);
    let lot_id = |level: u64, p: u64| lot_base + ((level - 1) * part_lots + p / LOT_SIZE) as i64;
    let fast_base = lot_base + (LEVELS * part_lots) as i64;
    let fast_lots = products.div_ceil(FASTENER_LOT_PRODUCTS);
    let case_base = fast_base + fast_lots as i64;
    let cases = products.div_ceil(CASE_SIZE);
    let pallet_base = case_base + cases as i64;
    let pallets = cases.div_ceil(PALLET_SIZE);
    let ship_base = pallet_base + pallets as i64;
    let shipments = pallets.div_ceil(2);
    let rework_case = ship_base + shipments as i64;

    // Master data: lots, containers, shipments.
    for level in 1..=LEVELS {
        for l in 0..part_lots {
            let ext = format!("LOT-L{level}-{l:06}");
            let part = format!("P-L{level}");
            let supplier = format!("SUP-{:03}", (l * 7 + level) % 50);
            let seen = ts(t0 + Duration::seconds((l * LOT_SIZE * 6) as i64) - Duration::hours(1));
            sink.row(
                ITEMS,
                &[
                    Val::I(lot_id(level, l * LOT_SIZE)),
                    Val::T("lot"),
                    Val::T(&ext),
                    Val::T(&part),
                    Val::B(false),
                    Val::T(&supplier),
                    Val::T(&format!("SB-{l}")),
                    Val::F(LOT_SIZE as f64),
                    Val::Null,
                    Val::Null,
                    Val::Null,
                    Val::Null,
                    Val::Null,
                    Val::T(&seen),
                ],
            )
            .await?;
        }
    }
    for f in 0..fast_lots {
        let ext = format!("FAST-{f:06}");
        let seen =
            ts(t0 + Duration::seconds((f * FASTENER_LOT_PRODUCTS * 6) as i64) - Duration::hours(1));
        sink.row(
            ITEMS,
            &[
                Val::I(fast_base + f as i64),
                Val::T("lot"),
                Val::T(&ext),
                Val::T("M4-SCREW"),
                Val::B(false),
                Val::T("Fastenal"),
                Val::Null,
                Val::F((FASTENER_LOT_PRODUCTS * 4) as f64),
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::T(&seen),
            ],
        )
        .await?;
    }
    for c in 0..cases {
        let ext = format!("CASE-{c:08}");
        sink.row(
            ITEMS,
            &[
                Val::I(case_base + c as i64),
                Val::T("container"),
                Val::T(&ext),
                Val::Null,
                Val::B(false),
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::T("case"),
                Val::Null,
                Val::Null,
                Val::Null,
            ],
        )
        .await?;
    }
    for p in 0..pallets {
        let ext = format!("PAL-{p:07}");
        sink.row(
            ITEMS,
            &[
                Val::I(pallet_base + p as i64),
                Val::T("container"),
                Val::T(&ext),
                Val::Null,
                Val::B(false),
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::T("pallet"),
                Val::Null,
                Val::Null,
                Val::Null,
            ],
        )
        .await?;
    }
    let product_time = |p: u64| t0 + Duration::seconds((p * 6) as i64);
    for s in 0..shipments {
        let ext = format!("SHP-{s:07}");
        let customer = format!("CUST-{:03}", (s * 2_654_435_761) % CUSTOMERS);
        let last_product = ((s + 1) * 2 * PALLET_SIZE * CASE_SIZE).min(products) - 1;
        let at = ts(product_time(last_product) + Duration::hours(12));
        sink.row(
            ITEMS,
            &[
                Val::I(ship_base + s as i64),
                Val::T("shipment"),
                Val::T(&ext),
                Val::Null,
                Val::B(false),
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::Null,
                Val::T(&customer),
                Val::T(&at),
                Val::Null,
            ],
        )
        .await?;
    }
    sink.row(
        ITEMS,
        &[
            Val::I(rework_case),
            Val::T("container"),
            Val::T("CASE-REWORK"),
            Val::Null,
            Val::B(false),
            Val::Null,
            Val::Null,
            Val::Null,
            Val::Null,
            Val::Null,
            Val::T("case"),
            Val::Null,
            Val::Null,
            Val::Null,
        ],
    )
    .await?;

    let mut op_id: i64 = 0;
    let mut qc_id: i64 = 0;
    let epoch = "b0000000-0000-0000-0000-000000000001";
    let mut pending_edges: Vec<PendingEdge> = Vec::new();
    let mut next_edge_id: i64 = 0;

    for p in 0..products {
        let t = product_time(p);
        // Units, deepest level first (built first).
        for level in (1..=LEVELS).rev() {
            let uid = unit_id(p, level);
            let built = t - Duration::minutes((level as i64 - 1) * 30);
            let serial = if level == 1 {
                format!("SN{p:010}")
            } else {
                format!("SA{level}-{p:010}")
            };
            let part = format!("P-L{level}");
            let wo = format!("WO-{:05}", p / 5_000);
            let line = if level == 1 { "line-1" } else { "line-sub" };
            sink.row(
                ITEMS,
                &[
                    Val::I(uid),
                    Val::T("unit"),
                    Val::T(&serial),
                    Val::T(&part),
                    Val::B(false),
                    Val::Null,
                    Val::Null,
                    Val::Null,
                    Val::T(&wo),
                    Val::T(line),
                    Val::Null,
                    Val::Null,
                    Val::Null,
                    Val::T(&ts(built)),
                ],
            )
            .await?;

            // Material: this level's part lot; level 5 also the fastener lot.
            edge(
                &mut pending_edges,
                uid,
                lot_id(level, p),
                "consumed",
                Some(1.0),
                "ST-MAT",
                ts(built),
                None,
            );
            if level == LEVELS {
                edge(
                    &mut pending_edges,
                    uid,
                    fast_base + (p / FASTENER_LOT_PRODUCTS) as i64,
                    "consumed",
                    Some(4.0),
                    "ST-SCREW",
                    ts(built),
                    None,
                );
            }
            if level < LEVELS {
                edge(
                    &mut pending_edges,
                    uid,
                    unit_id(p, level + 1),
                    "assembled",
                    Some(1.0),
                    "ST-ASM",
                    ts(built),
                    None,
                );
            }

            // Operations: 3 on finished units, 1 on sub-assemblies; 10 parameters each.
            let ops: &[(&str, &str, &str)] = if level == 1 {
                &[
                    ("ST10", "OP10 press-fit", "PRESS"),
                    ("ST20", "OP20 screw", "SCREW"),
                    ("ST30", "OP30 leak test", "LEAK"),
                ]
            } else {
                &[("ST05", "OP05 sub-assembly", "SUBPRESS")]
            };
            for (k, (station, operation, equip)) in ops.iter().enumerate() {
                op_id += 1;
                let equipment = format!("{equip}-{}", 1 + (p + k as u64) % 2);
                let operator = format!("OP{:04}", 1 + (p / 4_800) % 20);
                let started = built + Duration::seconds(k as i64 * 60);
                let completed = started + Duration::seconds(20);
                let mut oos = false;
                let mut params = Vec::with_capacity(PARAM_DEFS.len());
                for (name, unit, lsl, usl, nominal) in PARAM_DEFS {
                    let spread = (usl - lsl) / 6.0;
                    let mut v = nominal + rng.random_range(-2.5..2.5) * spread;
                    if rng.random_range(0..1000) < 2 {
                        v = usl + spread; // a real out-of-spec value, ~0.2 % of parameters
                    }
                    let in_spec = v >= *lsl && v <= *usl;
                    oos |= !in_spec;
                    params.push((
                        *name,
                        *unit,
                        *lsl,
                        *usl,
                        (v * 1000.0).round() / 1000.0,
                        in_spec,
                    ));
                }
                let env = format!(
                    "[{{\"name\":\"hall.temp\",\"value\":{:.1},\"unit\":\"°C\"}},{{\"name\":\"hall.humidity\",\"value\":{:.1},\"unit\":\"%\"}}]",
                    21.0 + rng.random_range(-2.0..2.0),
                    45.0 + rng.random_range(-10.0..10.0)
                );
                let result = if oos { "fail" } else { "pass" };
                let defect = if oos { Val::T("OOS") } else { Val::Null };
                let recipe = format!("R{}", level);
                sink.row(
                    OPS,
                    &[
                        Val::I(op_id),
                        Val::I(uid),
                        Val::T(station),
                        Val::T(operation),
                        Val::T(&equipment),
                        Val::T(&operator),
                        Val::T(&recipe),
                        Val::T(&ts(started)),
                        Val::T(&ts(completed)),
                        Val::T(result),
                        defect,
                        Val::B(oos),
                        Val::T(&env),
                        Val::T(if level == 1 {
                            "gw-line-1"
                        } else {
                            "gw-line-sub"
                        }),
                    ],
                )
                .await?;
                for (name, unit, lsl, usl, v, in_spec) in params {
                    sink.row(
                        PARAMS,
                        &[
                            Val::I(op_id),
                            Val::T(name),
                            Val::F(v),
                            Val::Null,
                            Val::T(unit),
                            Val::F(lsl),
                            Val::F(usl),
                            Val::B(in_spec),
                        ],
                    )
                    .await?;
                }
                if k == 0 {
                    sink.row(
                        MATS,
                        &[Val::I(op_id), Val::I(lot_id(level, p)), Val::F(1.0)],
                    )
                    .await?;
                }
            }
            if level == 1 {
                qc_id += 1;
                let v = 12.0 + rng.random_range(-0.01..0.01);
                sink.row(
                    QC,
                    &[
                        Val::I(qc_id),
                        Val::I(uid),
                        Val::T("bore.diameter"),
                        Val::F(v),
                        Val::Null,
                        Val::T("mm"),
                        Val::F(11.99),
                        Val::F(12.02),
                        Val::T("pass"),
                        Val::T("QC1"),
                        Val::T("OP0100"),
                        Val::T(&ts(t + Duration::minutes(10))),
                    ],
                )
                .await?;
                sink.row(
                    READINGS,
                    &[
                        Val::T("gw-line-1"),
                        Val::T(epoch),
                        Val::I(p as i64 + 1),
                        Val::T(&ts(t + Duration::seconds(5))),
                        Val::T("press-plc"),
                        Val::T("press.pressure"),
                        Val::F(200.0 + rng.random_range(-10.0..10.0)),
                        Val::Null,
                        Val::T("bar"),
                        Val::T("good"),
                        Val::Null,
                    ],
                )
                .await?;
            }
        }
        // Packing, with an occasional unpack/repack (closed edge), and shipping.
        let uid = unit_id(p, 1);
        let case = case_base + (p / CASE_SIZE) as i64;
        if p % 1_000 == 0 {
            edge(
                &mut pending_edges,
                rework_case,
                uid,
                "packed",
                None,
                "PK1",
                ts(t + Duration::minutes(15)),
                Some(ts(t + Duration::minutes(18))),
            );
        }
        edge(
            &mut pending_edges,
            case,
            uid,
            "packed",
            None,
            "PK1",
            ts(t + Duration::minutes(20)),
            None,
        );
        if p % CASE_SIZE == CASE_SIZE - 1 || p == products - 1 {
            let c = p / CASE_SIZE;
            let pallet = pallet_base + (c / PALLET_SIZE) as i64;
            edge(
                &mut pending_edges,
                pallet,
                case,
                "packed",
                None,
                "PK2",
                ts(t + Duration::minutes(30)),
                None,
            );
            if c % PALLET_SIZE == PALLET_SIZE - 1 || c == cases - 1 {
                let pl = c / PALLET_SIZE;
                let s = ship_base + (pl / 2) as i64;
                edge(
                    &mut pending_edges,
                    s,
                    pallet,
                    "shipped",
                    None,
                    "SHIP",
                    ts(t + Duration::hours(12)),
                    None,
                );
            }
        }
        for (parent, child, rel, qty, station, at, closed) in pending_edges.drain(..) {
            next_edge_id += 1;
            let qty = qty.map(Val::F).unwrap_or(Val::Null);
            let (vt, reason) = match &closed {
                Some(c) => (Val::T(c.as_str()), Val::T("unpacked")),
                None => (Val::Null, Val::Null),
            };
            sink.row(
                EDGES,
                &[
                    Val::I(next_edge_id),
                    Val::I(parent),
                    Val::I(child),
                    Val::T(rel),
                    qty,
                    Val::T(station),
                    Val::T(&at),
                    vt,
                    reason,
                ],
            )
            .await?;
        }
        if p % 100_000 == 99_999 {
            tracing::info!(products = p + 1, "generated");
        }
    }
    sink.flush_all().await?;

    let rows = match &sink {
        Sink::Pg { rows, .. } | Sink::Sqlite { rows, .. } => rows.clone(),
    };
    if let Sink::Pg { pool, .. } = &sink {
        for (name, def) in &saved_indexes {
            tracing::info!(index = name.as_str(), "rebuilding index");
            sqlx::raw_sql(sqlx::AssertSqlSafe(def.clone()))
                .execute(pool)
                .await
                .with_context(|| format!("rebuilding {name}"))?;
        }
        for (t, _) in TABLES {
            if matches!(*t, "items" | "edges" | "operations" | "quality_checks") {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))"
                )))
                .execute(pool)
                .await?;
            }
        }
        // VACUUM, not only ANALYZE: it sets the visibility map, without which the recall's
        // index-only scans fetch every heap page anyway.
        sqlx::raw_sql("VACUUM (ANALYZE)").execute(pool).await?;
    }
    if let Sink::Sqlite { pool, .. } = &sink {
        sqlx::raw_sql("ANALYZE").execute(pool).await?;
    }
    Ok(Written {
        rows: TABLES.iter().map(|(n, _)| *n).zip(rows).collect(),
        products,
    })
}
