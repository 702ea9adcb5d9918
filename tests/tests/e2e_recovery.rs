//! Recovery after a broker outage (issue 19), with the real binaries: `threadline-gateway run`
//! producing 10,000 readings/s (its synthetic source, straight into the outbox),
//! `threadline-aggregator run` on PostgreSQL, a real Mosquitto killed for the outage and started
//! again on the same port without persistence (sessions and retained messages gone).
//!
//! Required: the backlog — every record the gateway had when the broker came back — is acked
//! (committed in PostgreSQL) within 5 s of the broker's return, and at the end every record is
//! stored exactly once (seqs 1..=N, none missing). Before, the aggregator reconnected with up
//! to 5 s of backoff and a clean session, the window the gateway re-sent on its own reconnect
//! reached nobody, and the gateway waited its 10 s `ack_timeout_ms`: up to 16 s.
//!
//! `THREADLINE_OUTAGE_S` (default 5) sets the outage and `THREADLINE_RATE` the rate (default
//! 2,000 readings/s, so that debug binaries on a loaded machine drain on ingest speed alone);
//! the benchmark in BENCHMARKS.md runs it with release binaries (`THREADLINE_E2E_RELEASE=1`),
//! 30 s and 10,000/s. What the test tells apart is the re-send: without it the backlog waits
//! for `ack_timeout_ms` (10 s) whatever the speed.

use std::time::{Duration, Instant};

use threadline_e2e::{Mosquitto, Proc, TestDb, binaries, free_port, wait_for};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One sample of the gateway's `/metrics`.
async fn metric(http: &reqwest::Client, addr: &str, name: &str) -> Option<f64> {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_backlog_of_a_broker_outage_drains_within_5_s_and_nothing_is_lost() -> anyhow::Result<()>
{
    let outage = Duration::from_secs(env_u64("THREADLINE_OUTAGE_S", 5));
    let rate = env_u64("THREADLINE_RATE", 2_000);
    let bins = binaries()?;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    if !Mosquitto::available() {
        db.drop_db().await;
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut broker = Mosquitto::start().await;
    let agg_http = format!("127.0.0.1:{}", free_port());
    let agg_cfg = dir.path().join("aggregator.toml");
    std::fs::write(
        &agg_cfg,
        format!(
            "[aggregator]\nid = \"agg-rec\"\nbatch_max_wait_ms = 20\n[mqtt]\nurl = \"{}\"\n\
             [database]\nurl = \"{}\"\n[http]\nlisten = \"{agg_http}\"\n",
            broker.url(),
            db.url
        ),
    )?;
    let agg_cfg = agg_cfg.to_string_lossy().into_owned();
    let aggregator = Proc::start(
        "aggregator",
        dir.path(),
        &bins.aggregator,
        &["run", "--config", &agg_cfg],
    )?;
    let api = threadline_e2e::Api::new(&agg_http);
    api.wait_healthy(Duration::from_secs(60)).await?;

    // Records: a warm-up, the outage, and as long again after it (live traffic while the
    // backlog drains).
    let total = rate * (3 + 2 * outage.as_secs());
    let gw_health = format!("127.0.0.1:{}", free_port());
    let gw_cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &gw_cfg,
        format!(
            "[gateway]\nid = \"gw-rec\"\nplant = \"plant-a\"\nline = \"line-1\"\ndata_dir = \"{}\"\n\
             buffer_max_mb = 512\n\n[mqtt]\nurl = \"{}\"\nkeep_alive_s = 5\n\n\
             [health]\nlisten = \"{gw_health}\"\n",
            dir.path().join("gw").display(),
            broker.url()
        ),
    )?;
    let gw_cfg = gw_cfg.to_string_lossy().into_owned();
    let (rate_s, total_s) = (rate.to_string(), total.to_string());
    let gateway = Proc::start(
        "gateway",
        dir.path(),
        &bins.gateway,
        &[
            "run",
            "--config",
            &gw_cfg,
            "--synthetic-rate",
            &rate_s,
            "--synthetic-total",
            &total_s,
        ],
    )?;
    let http = reqwest::Client::new();
    let logs =
        |g: &Proc, a: &Proc| format!("gateway:\n{}\naggregator:\n{}", g.output(), a.output());
    wait_for(
        "records acked before the outage",
        Duration::from_secs(30),
        || async {
            metric(&http, &gw_health, "threadline_outbox_acked_total")
                .await
                .filter(|n| *n >= rate as f64)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&gateway, &aggregator)))?;

    broker.down(true);
    tokio::time::sleep(outage).await;
    broker.up().await;
    let back = Instant::now();
    let backlog = metric(&http, &gw_health, "threadline_outbox_last_seq")
        .await
        .unwrap_or(0.0);
    let depth_at_return = metric(&http, &gw_health, "threadline_outbox_depth")
        .await
        .unwrap_or(0.0);
    // Drained: every record the gateway held when the broker came back is acked (acks delete
    // from the outbox oldest first per envelope; acked_total counts deletions).
    let drained = wait_for("the backlog acked", Duration::from_secs(120), || async {
        metric(&http, &gw_health, "threadline_outbox_acked_total")
            .await
            .filter(|n| *n >= backlog)
            .map(|_| back.elapsed())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&gateway, &aggregator)))?;
    wait_for("every record acked", Duration::from_secs(120), || async {
        let acked = metric(&http, &gw_health, "threadline_outbox_acked_total").await?;
        (acked >= total as f64).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&gateway, &aggregator)))?;
    let stored = db
        .count("SELECT count(*) FROM readings WHERE gateway = 'gw-rec'")
        .await?;
    let max_seq = db
        .count("SELECT COALESCE(max(seq), 0) FROM readings WHERE gateway = 'gw-rec'")
        .await?;
    let resends = metric(
        &http,
        &gw_health,
        "threadline_publish_aggregator_onlines_total",
    )
    .await
    .unwrap_or(0.0);
    eprintln!(
        "outage {outage:?} at {rate}/s: {depth_at_return} records waiting at the broker's \
         return (seq {backlog}), acked {drained:?} after it; {stored} stored of {total}; \
         window re-sent on {resends} aggregator online status(es)"
    );
    let out = logs(&gateway, &aggregator);
    assert_eq!(stored, total as i64, "0 lost, no duplicates\n{out}");
    assert_eq!(max_seq, total as i64, "seqs 1..=N\n{out}");
    assert!(
        drained <= Duration::from_secs(5),
        "backlog of {depth_at_return} records acked {drained:?} after the broker came back (≤ 5 s)"
    );
    drop(gateway);
    drop(aggregator);
    db.drop_db().await;
    Ok(())
}
