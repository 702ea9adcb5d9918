//! Arrival order does not change the genealogy: a small plant's assembly and packing events
//! (with a disassembly, a re-assembly, an unpacking and a re-packing of the same items) are
//! delivered in many permutations and batch splits, on SQLite and PostgreSQL; every delivery
//! yields the same edges (validity intervals and close reasons) as delivery in order, and no
//! close is left pending. Close events that arrive first wait in `pending_closes`.

#![allow(clippy::unwrap_used)]

mod store_support;

use serde_json::{Value, json};
use store_support::*;
use threadline_aggregator::store::Db;

/// The plant's events for run `k` (its own ids and gateway), in emission (seq) order.
fn plant(k: usize) -> Vec<Value> {
    let (p, c, c2) = (format!("P{k}"), format!("C{k}"), format!("D{k}"));
    let (b1, b2) = (format!("BOX{k}"), format!("BOXB{k}"));
    let unit = |id: &str| json!({"kind":"unit","id":id});
    vec![
        rec(1, 1, "assembled", json!({"parent":p,"child":unit(&c)})),
        rec(2, 2, "assembled", json!({"parent":p,"child":unit(&c2)})),
        rec(
            3,
            3,
            "disassembled",
            json!({"parent":p,"child":unit(&c),"reason":"rework"}),
        ),
        rec(4, 4, "assembled", json!({"parent":p,"child":unit(&c)})),
        rec(
            5,
            5,
            "packed",
            json!({"container":b1,"level":"case","child":unit(&p)}),
        ),
        rec(
            6,
            6,
            "unpacked",
            json!({"container":b1,"level":"case","child":unit(&p)}),
        ),
        rec(
            7,
            7,
            "packed",
            json!({"container":b2,"level":"case","child":unit(&p)}),
        ),
        rec(
            8,
            8,
            "unpacked",
            json!({"container":b2,"level":"case","child":unit(&p)}),
        ),
        rec(
            9,
            9,
            "packed",
            json!({"container":b1,"level":"case","child":unit(&p)}),
        ),
    ]
}

/// Run `k`'s edges, ids normalised (suffix dropped), in a stable order.
async fn edges(
    db: &Db,
    k: usize,
) -> Vec<(
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
)> {
    type Row = (
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
    );
    let q = "SELECT p.ext_id, c.ext_id, e.relation, CAST(e.valid_from AS TEXT),
                    CAST(e.valid_to AS TEXT), e.closed_reason
             FROM edges e JOIN items p ON p.id = e.parent_id JOIN items c ON c.id = e.child_id";
    let rows: Vec<Row> = match db {
        Db::Postgres(pool) => sqlx::query_as(q).fetch_all(pool).await.unwrap(),
        Db::Sqlite(pool) => sqlx::query_as(q).fetch_all(pool).await.unwrap(),
    };
    let sfx = k.to_string();
    let norm = |s: &str| s.strip_suffix(sfx.as_str()).map(str::to_owned);
    let mut out: Vec<Row> = rows
        .into_iter()
        .filter_map(|r| Some((norm(&r.0)?, norm(&r.1)?, r.2, r.3, r.4, r.5)))
        .collect();
    out.sort();
    out
}

/// A deterministic pseudo-random generator (xorshift): the same permutations every run.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

async fn same_genealogy_whatever_the_order(db: &Db) {
    // Run 0: in order, one event per batch — the reference.
    for r in plant(0) {
        db.write_batch(&batch(&[(topic("gw-0"), envelope("gw-0", vec![r]))]))
            .await
            .unwrap();
    }
    let want = edges(db, 0).await;
    assert_eq!(want.len(), 6, "{want:#?}");
    assert_eq!(
        want.iter().filter(|e| e.4.is_some()).count(),
        3,
        "{want:#?}"
    );

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let runs = 40;
    for k in 1..=runs {
        let gw = format!("gw-{k}");
        let mut recs = plant(k);
        // Fisher–Yates; the reversed order is always one of the runs.
        if k == 1 {
            recs.reverse();
        } else {
            for i in (1..recs.len()).rev() {
                recs.swap(i, rng.below(i + 1));
            }
        }
        // Delivered in batches of 1–3 events (backlog and live interleaved).
        let mut rest = &recs[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(3)).min(rest.len());
            let (now, later) = rest.split_at(n);
            db.write_batch(&batch(&[(topic(&gw), envelope(&gw, now.to_vec()))]))
                .await
                .unwrap();
            rest = later;
        }
        let got = edges(db, k).await;
        let order: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(got, want, "run {k}, arrival order {order:?}");
    }
    assert_eq!(
        db.count("pending_closes").await.unwrap(),
        0,
        "every close applied"
    );
    assert_eq!(db.count("dead_letters").await.unwrap(), 0);
}

conformance!(same_genealogy_whatever_the_order);
