//! End-to-end delivery through a real Mosquitto: the gateway runtime (in-process, synthetic
//! records) → outbox → MQTT → stand-in aggregator that acks. Every test counts every record
//! from source to consumer: none missing, seq order = production order, duplicates only as
//! allowed (the consumer dedups by (epoch, seq)).

#![allow(clippy::unwrap_used)]

mod delivery_support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use delivery_support::*;
use threadline_gateway::config::GatewayConfig;
use threadline_gateway::outbox::{OutboxFileStats, read_file_stats};
use threadline_gateway::runtime::{RunOptions, run_with};
use threadline_gateway::test_support::Synthetic;
use tokio_util::sync::CancellationToken;

const ROOT: &str = "threadline/v1";

struct Gateway {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    dir: tempfile::TempDir,
}

impl Gateway {
    fn start(url: &str, extra: &str, buffer_max_mb: u64, syn: Synthetic) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let text = gateway_toml(dir.path(), url, extra, buffer_max_mb);
        let cfg = GatewayConfig::parse("gw.toml", &text).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_with(
            cfg,
            stop.clone(),
            RunOptions {
                synthetic: Some(syn),
            },
        ));
        Gateway { stop, task, dir }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    async fn stats(&self) -> OutboxFileStats {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = read_file_stats(&outbox_path(self.data_dir())).await {
                return s;
            }
            assert!(Instant::now() < deadline, "outbox never appeared");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the outbox file until `cond` holds.
    async fn wait_stats(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&OutboxFileStats) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats().await;
            if cond(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}; last {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("graceful shutdown within 10 s");
        r.unwrap().unwrap();
    }
}

fn syn(rate_per_s: u64, total: u64, event_every: u64) -> Synthetic {
    Synthetic {
        rate_per_s,
        event_every,
        total: Some(total),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing() {
    if !have_mosquitto() {
        return;
    }
    let mut broker = Mosquitto::start().await;
    let acker = Acker::start(broker.port, ROOT).await;
    let gw = Gateway::start(
        &broker.url(),
        "ack_timeout_ms = 2000",
        64,
        syn(3000, 8000, 50),
    );
    let epoch = gw.stats().await.epoch;
    wait_for("first records delivered", Duration::from_secs(15), || {
        acker.count() >= 1000
    })
    .await;
    broker.down(false);
    // The outage lasts while the gateway keeps producing into its outbox.
    gw.wait_stats(
        "records accumulate during the outage",
        Duration::from_secs(15),
        |s| s.readings + s.events >= 1500,
    )
    .await;
    broker.up().await;
    wait_for("everything delivered", Duration::from_secs(30), || {
        acker.count() >= 8000
    })
    .await;
    gw.wait_stats("outbox emptied by acks", Duration::from_secs(15), |s| {
        s.readings + s.events == 0
    })
    .await;
    assert_complete(&acker.seen.lock().unwrap(), epoch, 8000, 50);
    gw.shutdown().await;
    acker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_without_persistence_loses_nothing() {
    if !have_mosquitto() {
        return;
    }
    let mut broker = Mosquitto::start().await;
    let acker = Acker::start(broker.port, ROOT).await;
    // The aggregator is slow: records reach it but are not acked before the broker dies, and
    // whatever the broker held (in flight to the acker, the gateway's session) dies with it.
    acker.acking.store(false, Ordering::SeqCst);
    let gw = Gateway::start(
        &broker.url(),
        "ack_timeout_ms = 30000",
        64,
        syn(3000, 6000, 25),
    );
    let epoch = gw.stats().await.epoch;
    wait_for(
        "records reach the aggregator",
        Duration::from_secs(15),
        || acker.count() >= 300,
    )
    .await;
    broker.down(true);
    broker.up().await;
    acker.acking.store(true, Ordering::SeqCst);
    // Nothing was acked before, so everything must come again after the reconnect (not after
    // the 30 s ack timeout): the outbox, not the broker session, is the source of truth.
    wait_for("everything delivered", Duration::from_secs(25), || {
        acker.count() >= 6000
    })
    .await;
    gw.wait_stats("outbox emptied", Duration::from_secs(15), |s| {
        s.readings + s.events == 0
    })
    .await;
    {
        let seen = acker.seen.lock().unwrap();
        assert!(seen.duplicates > 0, "the unacked records were sent again");
        assert_complete(&seen, epoch, 6000, 25);
    }
    gw.shutdown().await;
    acker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_records_stay_and_are_resent_until_the_aggregator_acks() {
    if !have_mosquitto() {
        return;
    }
    let broker = Mosquitto::start().await;
    let acker = Acker::start(broker.port, ROOT).await;
    acker.acking.store(false, Ordering::SeqCst);
    let gw = Gateway::start(
        &broker.url(),
        "ack_timeout_ms = 300\nbatch_max_records = 100\ninflight_batches = 4",
        64,
        syn(5000, 1000, 10),
    );
    let epoch = gw.stats().await.epoch;
    // Without acks the in-flight window (4 envelopes of at most 100) fills and is re-sent
    // after every ack timeout; nothing beyond the window goes out.
    wait_for(
        "the window re-sent a few times",
        Duration::from_secs(20),
        || {
            let c = acker.seen.lock().unwrap();
            c.count() > 0 && c.duplicates >= 3 * c.count() as u64
        },
    )
    .await;
    gw.wait_stats("production finished", Duration::from_secs(10), |s| {
        s.next_seq == 1001
    })
    .await;
    let sent = acker.count();
    assert!(sent <= 400, "at most the window is in flight: {sent}");
    // PUBACKs happened for all of them; still nothing left the outbox.
    let s = gw.stats().await;
    assert_eq!(
        (s.readings, s.events),
        (900, 100),
        "nothing deleted without an ack"
    );
    acker.acking.store(true, Ordering::SeqCst);
    gw.wait_stats("outbox emptied once acked", Duration::from_secs(15), |s| {
        s.readings + s.events == 0
    })
    .await;
    assert_complete(&acker.seen.lock().unwrap(), epoch, 1000, 10);
    gw.shutdown().await;
    acker.stop().await;
}

/// Starts a gateway with a 1 MiB outbox and no broker, lets `total` synthetic records fill it,
/// then starts the broker and the aggregator. Returns (gateway, acker, metrics text at the end
/// of production).
async fn fill_then_deliver(event_every: u64, total: u64) -> (Gateway, Acker, Mosquitto, String) {
    let mut broker = Mosquitto::start().await;
    broker.down(true);
    let health = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "\n[health]\nlisten = \"{health}\"\nmax_outbox_age_s = 1\nmax_device_silence_s = 60\n"
    );
    let gw = Gateway::start(&broker.url(), &extra, 1, syn(200_000, total, event_every));
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&health),
        )
        .await
        {
            use tokio::io::AsyncWriteExt;
            let _ = s.shutdown().await;
            let (_, text) = http_get(&health, "/metrics").await;
            let done = metric(&text, "threadline_outbox_appended_total")
                + metric(&text, "threadline_outbox_readings_refused_total");
            if done as u64 == total {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "production never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(metric(&metrics, "threadline_outbox_full"), 1.0);
    // The broker has been unreachable for a while: the oldest record is older than 1 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = http_get(&health, "/healthz").await;
        if code == 503 {
            assert!(body.contains("outbox: oldest record"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "healthz never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.up().await;
    let acker = Acker::start(broker.port, ROOT).await;
    gw.wait_stats("outbox emptied", Duration::from_secs(30), |s| {
        s.readings + s.events == 0
    })
    .await;
    let (code, _) = http_get(&health, "/healthz").await;
    assert_eq!(code, 200, "healthy again once delivered");
    (gw, acker, broker, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_outbox_drops_oldest_readings_and_keeps_every_event() {
    if !have_mosquitto() {
        return;
    }
    let (gw, acker, _broker, m) = fill_then_deliver(10, 20_000).await;
    let dropped = metric(&m, "threadline_outbox_readings_dropped_total") as u64;
    assert!(dropped > 0);
    assert_eq!(metric(&m, "threadline_outbox_readings_refused_total"), 0.0);
    {
        let c = acker.seen.lock().unwrap();
        assert_eq!(c.records.len(), 1, "one epoch");
        let recs = c.records.values().next().unwrap();
        let events: Vec<u64> = recs
            .values()
            .filter(|r| !r.body.is_reading())
            .map(counter_of)
            .collect();
        assert_eq!(
            events,
            (1..=2000).map(|i| i * 10).collect::<Vec<_>>(),
            "every event, in order"
        );
        let readings: Vec<u64> = recs
            .values()
            .filter(|r| r.body.is_reading())
            .map(|r| r.seq)
            .collect();
        assert_eq!(
            readings.len() as u64 + dropped,
            18_000,
            "received + dropped = produced"
        );
        // Oldest first: the kept readings are every reading from the oldest kept one on.
        let first = readings[0];
        let expected: Vec<u64> = (first..=20_000).filter(|s| s % 10 != 0).collect();
        assert_eq!(readings, expected);
        for r in recs.values() {
            assert_eq!(counter_of(r), r.seq);
        }
        // The retained status told the world how many readings were dropped.
        let last_status = c.statuses.last().expect("a status message");
        assert_eq!(last_status.readings_dropped, dropped);
    }
    gw.shutdown().await;
    acker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_full_of_events_refuses_readings_and_still_accepts_events() {
    if !have_mosquitto() {
        return;
    }
    let (gw, acker, _broker, m) = fill_then_deliver(2, 20_000).await;
    let dropped = metric(&m, "threadline_outbox_readings_dropped_total") as u64;
    let refused = metric(&m, "threadline_outbox_readings_refused_total") as u64;
    assert!(
        refused > 0,
        "readings were refused once only events remained"
    );
    {
        let c = acker.seen.lock().unwrap();
        let recs = c.records.values().next().unwrap();
        let events: Vec<u64> = recs
            .values()
            .filter(|r| !r.body.is_reading())
            .map(counter_of)
            .collect();
        assert_eq!(
            events,
            (1..=10_000).map(|i| i * 2).collect::<Vec<_>>(),
            "every event, in order"
        );
        let readings = recs.values().filter(|r| r.body.is_reading()).count() as u64;
        assert_eq!(
            readings + dropped + refused,
            10_000,
            "received + dropped + refused = produced"
        );
        // Refused readings got no seq (the last seq is the number of records stored), and seq
        // order is production order.
        let appended = metric(&m, "threadline_outbox_appended_total") as u64;
        assert_eq!(appended + refused, 20_000);
        assert_eq!(*recs.keys().last().unwrap(), appended);
        let counters: Vec<u64> = recs.values().map(counter_of).collect();
        assert!(counters.windows(2).all(|w| w[0] < w[1]));
    }
    gw.shutdown().await;
    acker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_records_flow_while_a_backlog_replays() {
    if !have_mosquitto() {
        return;
    }
    let mut broker = Mosquitto::start().await;
    broker.down(true);
    let gw = Gateway::start(
        &broker.url(),
        "batch_max_records = 200\ninflight_batches = 4",
        64,
        syn(10_000, 60_000, 0),
    );
    gw.wait_stats("a backlog builds up", Duration::from_secs(20), |s| {
        s.next_seq > 10_000
    })
    .await;
    // Measured before the broker is back: every seq up to here is backlog at the reconnect.
    let backlog_end = gw.stats().await.next_seq - 1;
    broker.up().await;
    let acker = Acker::start(broker.port, ROOT).await;
    wait_for("everything delivered", Duration::from_secs(60), || {
        acker.count() >= 60_000
    })
    .await;
    let epoch = gw.stats().await.epoch;
    let c = acker.seen.lock().unwrap().arrivals.clone();
    // The envelope completing the backlog (first copy) vs. the first live envelope.
    let backlog_done = c
        .iter()
        .position(|(f, l)| (*f..=*l).contains(&backlog_end))
        .unwrap();
    let first_live = c.iter().position(|(f, _)| *f > backlog_end).unwrap();
    assert!(
        first_live < backlog_done,
        "live envelope #{first_live} should arrive before the backlog ends (#{backlog_done})"
    );
    // And the backlog itself went out oldest first.
    let backlog_firsts: Vec<u64> = c
        .iter()
        .filter(|(f, _)| *f <= backlog_end)
        .map(|(f, _)| *f)
        .collect();
    assert!(
        backlog_firsts.windows(2).all(|w| w[0] < w[1]),
        "backlog oldest first"
    );
    assert_complete(&acker.seen.lock().unwrap(), epoch, 60_000, 0);
    gw.shutdown().await;
    acker.stop().await;
}
