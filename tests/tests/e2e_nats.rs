//! The whole path (gateways → broker → aggregator → acks) on NATS's MQTT interface (JetStream),
//! with the real binaries and PostgreSQL; skipped loudly without nats-server (a failure under
//! CI=true).
//!
//! - a 3-node cluster on loopback: gateways and the aggregator with `[mqtt] urls` naming all
//!   three (in different orders, so they sit on different nodes); the node the gateways are
//!   connected to is SIGKILLed mid-run: they move on to another node, and every record is
//!   stored exactly once and acked;
//! - NATS accepts `$share/…` and delivers nothing to it: `shared_group` replicas there are deaf.
//!   The aggregator says so in `/healthz` and its log; without `shared_group` (the alternative
//!   docs/scaling.md gives for such brokers) every record arrives.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use threadline_e2e::{
    Aggregator, Nats, NatsCluster, SynthGateway, TestDb, all_stored_once, audit_ok, binaries,
    check, stored, tail, wait_for,
};

/// Distinct records stored of all `gws`.
async fn stored_total(db: &TestDb, gws: &[SynthGateway]) -> Option<i64> {
    let mut n = 0;
    for g in gws {
        n += stored(db, &g.id).await.ok()?.distinct;
    }
    Some(n)
}

/// A fresh database, when nats-server is installed (else skipped loudly).
async fn deps() -> Option<TestDb> {
    if !Nats::available() {
        return None;
    }
    TestDb::create().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_killed_under_the_gateways_loses_and_doubles_nothing() -> Result<()> {
    const TOTAL: u64 = 3000;
    let Some(db) = deps().await else {
        return Ok(());
    };
    let bins = binaries()?;
    let dir = tempfile::tempdir()?;
    let mut cluster = NatsCluster::start(dir.path()).await?;
    // The aggregator starts on node 3, the gateways on node 1.
    let agg = Aggregator::start(
        &bins,
        dir.path(),
        "agg-nats",
        &cluster.urls(&[2, 1, 0]),
        "",
        &db,
    )?;
    agg.api()
        .wait_healthy(Duration::from_secs(90))
        .await
        .with_context(|| format!("{}\n{}", agg.proc.output(), cluster.logs()))?;
    let mut gateways = Vec::new();
    for i in 1..=2 {
        gateways.push(SynthGateway::start(
            &bins,
            dir.path(),
            &format!("gw-n{i}"),
            &cluster.urls(&[0, 1, 2]),
            TOTAL,
            600,
        )?);
    }
    let logs = |cluster: &NatsCluster, gws: &[SynthGateway]| {
        let mut s = format!("----- aggregator\n{}", tail(&agg.proc.output(), 40));
        for g in gws {
            s.push_str(&format!("\n----- {}\n{}", g.id, tail(&g.proc.output(), 30)));
        }
        s.push('\n');
        s.push_str(&cluster.logs());
        s
    };
    let node1 = cluster.nodes[0].url();
    wait_for(
        "records flowing through node 1",
        Duration::from_secs(90),
        || async {
            let n = stored_total(&db, &gateways).await?;
            (n >= TOTAL as i64 / 2).then_some(())
        },
    )
    .await
    .with_context(|| logs(&cluster, &gateways))?;
    for g in &gateways {
        let log = g.proc.output();
        ensure!(
            log.contains(&node1),
            "{} is not on node 1:\n{}",
            g.id,
            tail(&log, 20)
        );
    }
    let at_kill = stored_total(&db, &gateways).await.unwrap_or(0);
    cluster.nodes[0].kill(); // SIGKILL the node the gateways are connected to
    let killed = std::time::Instant::now();

    let problems = all_stored_once(&db, &bins, &gateways, Duration::from_secs(240)).await?;
    check(&problems, || logs(&cluster, &gateways))?;
    // What the recovery took (shown with --nocapture; docs/scaling.md quotes it).
    let mut refusals = 0.0;
    let mut resent = 0.0;
    for g in &gateways {
        let m = |name| threadline_e2e::metric(&g.health, "/metrics", name);
        refusals += m("threadline_mqtt_ack_subscribe_refusals_total")
            .await
            .unwrap_or(f64::NAN);
        resent += m("threadline_publish_resent_batches_total")
            .await
            .unwrap_or(f64::NAN);
    }
    println!(
        "node 1 killed with {at_kill} of {} records stored; all stored once and acked {:.1} s \
         later; ack SUBACK refusals {refusals}, envelopes re-sent after the ack timeout {resent}",
        2 * TOTAL,
        killed.elapsed().as_secs_f64()
    );
    for g in &gateways {
        let log = g.proc.output();
        let others = [cluster.nodes[1].url(), cluster.nodes[2].url()];
        ensure!(
            log.lines().any(|l| l.contains("connected to the broker")
                && others.iter().any(|u| l.contains(u.as_str()))),
            "{} never connected to another node:\n{}",
            g.id,
            tail(&log, 30)
        );
    }
    audit_ok(&agg.api()).await?;
    db.drop_db().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deaf_shared_subscription_is_reported_and_plain_subscriptions_work() -> Result<()> {
    const TOTAL: u64 = 500;
    let Some(db) = deps().await else {
        return Ok(());
    };
    let bins = binaries()?;
    let dir = tempfile::tempdir()?;
    let nats = Nats::start_single(dir.path()).await?;
    let shared = format!("url = \"{}\"\nshared_group = \"threadline\"", nats.url());
    let mut agg = Aggregator::start(
        &bins,
        dir.path(),
        "agg-deaf",
        &shared,
        "deaf_after_s = 3",
        &db,
    )?;
    agg.api()
        .wait_healthy(Duration::from_secs(60))
        .await
        .with_context(|| agg.proc.output())?;
    let gw = SynthGateway::start(
        &bins,
        dir.path(),
        "gw-deaf",
        &format!("url = \"{}\"", nats.url()),
        TOTAL,
        500,
    )?;
    let api = agg.api();
    let reason = wait_for(
        "/healthz to report deafness",
        Duration::from_secs(60),
        || async {
            let (st, v) = api.get("/healthz").await.ok()?;
            let text = v.to_string();
            (st == 503 && text.contains("delivers nothing")).then_some(text)
        },
    )
    .await
    .with_context(|| {
        format!(
            "{}\n{}",
            tail(&agg.proc.output(), 30),
            tail(&gw.proc.output(), 20)
        )
    })?;
    ensure!(
        reason.contains("records waiting") && reason.contains("shared_group"),
        "{reason}"
    );
    ensure!(
        agg.proc.output().contains("ingest is deaf"),
        "no log line:\n{}",
        tail(&agg.proc.output(), 30)
    );
    let s = stored(&db, "gw-deaf").await?;
    ensure!(
        s.distinct == 0,
        "this NATS delivers to $share subscriptions ({s:?}): the premise of the test is gone; \
         update docs/scaling.md"
    );

    // The alternative: one aggregator without shared_group.
    agg.proc.kill();
    let plain = format!("url = \"{}\"", nats.url());
    agg = Aggregator::start(
        &bins,
        dir.path(),
        "agg-plain",
        &plain,
        "deaf_after_s = 3",
        &db,
    )?;
    let problems = all_stored_once(
        &db,
        &bins,
        std::slice::from_ref(&gw),
        Duration::from_secs(120),
    )
    .await?;
    check(&problems, || {
        format!(
            "{}\n{}",
            tail(&agg.proc.output(), 30),
            tail(&gw.proc.output(), 20)
        )
    })?;
    agg.api()
        .wait_healthy(Duration::from_secs(30))
        .await
        .with_context(|| agg.proc.output())?;
    audit_ok(&agg.api()).await?;
    db.drop_db().await;
    Ok(())
}
