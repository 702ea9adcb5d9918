//! `[database] read_url`: the query side of the HTTP API reads from a replica, every write and
//! the reads enforcement decides on stay on the primary — with the real aggregator binary and
//! PostgreSQL.
//!
//! The "replica" is a copy of the primary taken at one moment (`CREATE DATABASE … TEMPLATE`)
//! that every session may only read (`default_transaction_read_only`): a streaming replica that
//! stopped replaying there. (A real streaming replica needs a `replication` line in the
//! server's `pg_hba.conf`, which the test machine's cluster does not have.) So what was written
//! after the copy shows where each route reads: a lot written later is unknown to the query side
//! (it reads the copy) and known to holds (they read the primary), and every write succeeds
//! (on the copy it would fail as read-only).

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::json;
use threadline_e2e::{Api, Proc, TestDb, binaries, free_port};

/// The aggregator's config: embedded broker, `url` the primary, `read_url` the replica if any.
fn config(dir: &std::path::Path, primary: &TestDb, replica: Option<&TestDb>, http: &str) -> String {
    let read = replica.map_or(String::new(), |r| format!("read_url = \"{}\"\n", r.url));
    let cfg = dir.join("agg.toml");
    let text = format!(
        "[aggregator]\nid = \"agg-replica\"\n\n\
         [mqtt]\nembedded = true\nallow_anonymous = true\nlisten = \"127.0.0.1:{}\"\n\n\
         [database]\nurl = \"{}\"\n{read}max_connections = 4\n\n\
         [http]\nlisten = \"{http}\"\n",
        free_port(),
        primary.url,
    );
    std::fs::write(&cfg, text).expect("write the aggregator config");
    cfg.to_string_lossy().into_owned()
}

async fn lot(api: &Api, id: &str) -> Result<()> {
    let (status, body) = api
        .post(
            "/api/v1/lots",
            &json!([{"lot": id, "part": "PCB-7", "supplier": "ACME"}]),
        )
        .await?;
    ensure!(status == 200, "POST /api/v1/lots {id}: {status} {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_read_the_replica_and_writes_go_to_the_primary() -> Result<()> {
    let Some(primary) = TestDb::create().await else {
        return Ok(());
    };
    let bins = binaries()?;
    let dir = tempfile::tempdir()?;
    let http = format!("127.0.0.1:{}", free_port());
    let api = Api::new(&http);

    // The primary, migrated, with one lot; then stopped so it can be copied.
    let cfg = config(dir.path(), &primary, None, &http);
    let mut agg = Proc::start(
        "aggregator",
        dir.path(),
        &bins.aggregator,
        &["run", "--config", &cfg],
    )?;
    api.wait_healthy(Duration::from_secs(60))
        .await
        .with_context(|| format!("aggregator log:\n{}", agg.output()))?;
    lot(&api, "LOT-OLD").await?;
    agg.terminate(Duration::from_secs(10));
    let replica = primary.read_only_copy().await.context("copy the primary")?;

    let cfg = config(dir.path(), &primary, Some(&replica), &http);
    let mut agg = Proc::start(
        "aggregator",
        dir.path(),
        &bins.aggregator,
        &["run", "--config", &cfg],
    )?;
    let outcome = async {
        api.wait_healthy(Duration::from_secs(60)).await?;
        // Writes: master data, a hold (on the read-only copy each would fail).
        lot(&api, "LOT-NEW").await?;
        let (status, body) = api
            .post(
                "/api/v1/holds",
                &json!({"kind": "lot", "id": "LOT-NEW", "reason": "supplier alert", "by": "qe"}),
            )
            .await?;
        ensure!(
            status == 200 || status == 201,
            "POST /api/v1/holds: {status} {body}"
        );
        // Holds read the primary: the new lot's hold is there at once.
        let (status, holds) = api.get("/api/v1/holds").await?;
        ensure!(status == 200, "GET /api/v1/holds: {status} {holds}");
        ensure!(
            holds.to_string().contains("LOT-NEW"),
            "the hold just placed is missing from GET /api/v1/holds: {holds}"
        );
        // The query side reads the replica: it knows the old lot, not the new one.
        let (status, body) = api
            .get("/api/v1/trace/lot/LOT-OLD?direction=forward")
            .await?;
        ensure!(
            status == 200,
            "trace of LOT-OLD (on the replica): {status} {body}"
        );
        let (status, body) = api
            .get("/api/v1/trace/lot/LOT-NEW?direction=forward")
            .await?;
        ensure!(
            status == 404,
            "trace of LOT-NEW answered {status} {body}: the query side did not read the replica"
        );
        let page = reqwest::get(format!("http://{http}/ui/lots/LOT-OLD")).await?;
        ensure!(page.status() == 200, "/ui/lots/LOT-OLD: {}", page.status());
        let page = reqwest::get(format!("http://{http}/ui/lots/LOT-NEW")).await?;
        ensure!(
            page.status() == 404,
            "/ui/lots/LOT-NEW: {} (expected 404 on the replica)",
            page.status()
        );
        Ok(())
    }
    .await;
    agg.terminate(Duration::from_secs(10));
    let log = agg.output();
    replica.drop_db().await;
    primary.drop_db().await;
    outcome.with_context(|| format!("aggregator log:\n{log}"))?;
    ensure!(
        log.contains("query side reads from the replica"),
        "no start-up line names the replica:\n{log}"
    );
    Ok(())
}
