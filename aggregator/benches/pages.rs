//! Web UI page benchmark on a generated plant (see `threadline-datagen`): every page of the UI
//! fetched over loopback HTTP from the aggregator's real router (authentication layer, error
//! layer, HTML rendering), timed to the last byte of the body. The client is in the same
//! process, so the numbers are server time plus a loopback round trip.
//!
//! ```text
//! threadline-datagen --db sqlite:///tmp/s1m.db --units 1000000
//! cargo bench --workspace --bench pages -- --db sqlite:///tmp/s1m.db [--n 200]
//! ```
//!
//! The ids come from the database: random finished units (`SN…`), the lots they consumed, a
//! case, a shipment, the station and parameter of an operation. Target (PRODUCT.md): every page
//! ≤ 100 ms server time on the 1 M-unit plant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use threadline_aggregator::api::{AppState, auth::Tokens, router};
use threadline_aggregator::store::Db;

struct Args {
    db: String,
    n: usize,
}

fn args() -> Args {
    let mut a = Args {
        db: "sqlite:///tmp/s1m.db".to_owned(),
        n: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--db" => a.db = it.next().unwrap_or_default(),
            "--n" => a.n = it.next().and_then(|v| v.parse().ok()).unwrap_or(200),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// A tiny deterministic PRNG (xorshift64*), as in the queries benchmark.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// One text value of the first row of `sql` (the same SQL on both backends).
async fn one(db: &Db, sql: &'static str) -> Option<String> {
    match db {
        Db::Postgres(p) => sqlx::query_scalar(sql)
            .fetch_optional(p)
            .await
            .ok()
            .flatten(),
        Db::Sqlite(p) => sqlx::query_scalar(sql)
            .fetch_optional(p)
            .await
            .ok()
            .flatten(),
    }
}

async fn two(db: &Db, sql: &'static str) -> Option<(String, String)> {
    match db {
        Db::Postgres(p) => sqlx::query_as(sql).fetch_optional(p).await.ok().flatten(),
        Db::Sqlite(p) => sqlx::query_as(sql).fetch_optional(p).await.ok().flatten(),
    }
}

fn esc(s: &str) -> String {
    threadline_aggregator::web::url_escape(s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let db = Db::connect(&a.db, 8).await?;
    let last = one(
        &db,
        "SELECT max(ext_id) FROM items WHERE kind = 'unit' AND ext_id >= 'SN' AND ext_id < 'SO'",
    )
    .await;
    let products: u64 = last
        .as_deref()
        .and_then(|s| s.strip_prefix("SN"))
        .and_then(|s| s.parse::<u64>().ok())
        .map(|n| n + 1)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no generated plant in {}; run threadline-datagen first",
                a.db
            )
        })?;
    let lot = one(
        &db,
        "SELECT ext_id FROM items WHERE kind = 'lot' AND ext_id LIKE 'LOT-%' ORDER BY id LIMIT 1",
    )
    .await
    .unwrap_or_default();
    let case = one(
        &db,
        "SELECT ext_id FROM items WHERE kind = 'container' ORDER BY id LIMIT 1",
    )
    .await
    .unwrap_or_default();
    let shipment = one(
        &db,
        "SELECT ext_id FROM items WHERE kind = 'shipment' ORDER BY id LIMIT 1",
    )
    .await
    .unwrap_or_default();
    let (station, parameter) = two(
        &db,
        "SELECT o.station, p.name FROM operations o JOIN operation_parameters p ON p.operation_id = o.id ORDER BY o.id LIMIT 1",
    )
    .await
    .unwrap_or_default();
    println!(
        "backend={} finished products={products} lot={lot} case={case} shipment={shipment} spc={station}/{parameter}",
        db.backend()
    );

    let app = router(AppState::new(
        db.clone(),
        Arc::new(Default::default()),
        Arc::new(Tokens::default()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    type Page = (&'static str, Box<dyn Fn(&mut Rng) -> String>);
    let pages: Vec<Page> = vec![
        ("/ (search)", Box::new(|_| "/".to_owned())),
        (
            "/?q=serial (redirect)",
            Box::new(move |r: &mut Rng| format!("/?q=SN{:010}", r.next(products))),
        ),
        (
            "/ui/units/{serial}",
            Box::new(move |r: &mut Rng| format!("/ui/units/SN{:010}", r.next(products))),
        ),
        (
            "/ui/lots/{lot}",
            Box::new({
                let lot = lot.clone();
                move |_| format!("/ui/lots/{}", esc(&lot))
            }),
        ),
        (
            "/ui/lots/FAST-000000",
            Box::new(|_| "/ui/lots/FAST-000000".to_owned()),
        ),
        (
            "/ui/lots/FAST-000000/scope (its recall scope, loaded after the page)",
            Box::new(|_| "/ui/lots/FAST-000000/scope".to_owned()),
        ),
        (
            "/ui/containers/{id}",
            Box::new(move |_| format!("/ui/containers/{}", esc(&case))),
        ),
        (
            "/ui/shipments/{id}",
            Box::new(move |_| format!("/ui/shipments/{}", esc(&shipment))),
        ),
        (
            "/ui/operations?station=",
            Box::new({
                let st = station.clone();
                move |_| format!("/ui/operations?station={}", esc(&st))
            }),
        ),
        (
            "/ui/spc?station=&parameter=",
            Box::new(move |_| {
                format!(
                    "/ui/spc?station={}&parameter={}",
                    esc(&station),
                    esc(&parameter)
                )
            }),
        ),
        ("/ui/dashboard", Box::new(|_| "/ui/dashboard".to_owned())),
        (
            "/api/v1/dashboard (its data)",
            Box::new(|_| "/api/v1/dashboard".to_owned()),
        ),
        ("/ui/analysis", Box::new(|_| "/ui/analysis".to_owned())),
    ];
    println!("| page | n | status | p50 ms | p99 ms | max ms | body |");
    println!("|---|---|---|---|---|---|---|");
    for (name, path) in &pages {
        let heavy = name.contains("FAST") || name.contains("spc") || name.contains("dashboard");
        let n = if heavy { (a.n / 10).max(5) } else { a.n };
        // Warm-up: connections, caches.
        for _ in 0..3 {
            let _ = http
                .get(format!("{base}{}", path(&mut rng)))
                .send()
                .await?
                .bytes()
                .await?;
        }
        let mut times = Vec::with_capacity(n);
        let (mut status, mut bytes) = (0u16, 0usize);
        for _ in 0..n {
            let url = format!("{base}{}", path(&mut rng));
            let t = Instant::now();
            let resp = http.get(url).send().await?;
            status = resp.status().as_u16();
            bytes = resp.bytes().await?.len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "| `{name}` | {n} | {status} | {:.2} | {:.2} | {:.2} | {:.0} KiB |",
            pct(&times, 0.5),
            pct(&times, 0.99),
            times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            bytes as f64 / 1024.0
        );
    }
    Ok(())
}
