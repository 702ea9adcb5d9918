//! Ingest over `mqtts://` with a private CA (`ca_file`) and username / `password_file` against a
//! real Mosquitto TLS listener that refuses anonymous clients; a wrong password never connects.
//! Certificates are made by `openssl`, the broker's password file by `mosquitto_passwd`. The
//! test gateway publishes on a second, plain listener of the same broker.

#![allow(clippy::unwrap_used)]

mod store_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use serde_json::json;
use store_support::*;
use threadline_aggregator::config::AggregatorConfig;
use threadline_aggregator::ingest::{self, IngestStats};
use threadline_aggregator::store::Db;
use tokio_util::sync::CancellationToken;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const WAIT: Duration = Duration::from_secs(10);
const USER: &str = "agg-tls";
const PASSWORD: &str = "s3cret";
const GW: &str = "gw-tls";

use threadline_shared::testing::{make_tls_certs as make_certs, run_quiet as run};

/// A Mosquitto with a plain anonymous listener (for the test gateway) and a TLS listener that
/// needs a password (for the aggregator). Killed on drop.
struct Broker {
    child: Child,
    plain: u16,
    tls: u16,
    dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// `None` (skipped loudly) when Mosquitto, `openssl` or `mosquitto_passwd` is missing.
    async fn start() -> Option<Broker> {
        if !Path::new(MOSQUITTO).exists() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{MOSQUITTO} not found; install mosquitto (apt-get install mosquitto)");
            }
            eprintln!(
                "SKIPPED: {MOSQUITTO} not found; install mosquitto to run the TLS ingest test"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        if !make_certs(d)
            || !run(
                d,
                "mosquitto_passwd",
                &["-b", "-c", "passwd", USER, PASSWORD],
            )
        {
            eprintln!("SKIPPED: openssl or mosquitto_passwd not available");
            return None;
        }
        let (plain, tls) = (free_port(), free_port());
        std::fs::write(
            d.join("mosquitto.conf"),
            format!(
                // `user root`: when the tests run as root, Mosquitto would otherwise switch to the
                // `mosquitto` user, which cannot read the private temp dir (ignored as non-root).
                "user root\nper_listener_settings true\npersistence false\n\
                 listener {plain} 127.0.0.1\nallow_anonymous true\n\
                 listener {tls} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\n\
                 keyfile {0}/server.key\nallow_anonymous false\npassword_file {0}/passwd\n",
                d.display()
            ),
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(d.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let broker = Broker {
            child,
            plain,
            tls,
            dir,
        };
        eventually("both mosquitto listeners", WAIT, || async {
            (std::net::TcpStream::connect(("127.0.0.1", plain)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", tls)).is_ok())
            .then_some(())
        })
        .await;
        Some(broker)
    }

    /// The aggregator config for the TLS listener, logging in with `password` (written to a
    /// password file with a trailing newline, as editors leave it).
    fn aggregator_config(&self, password: &str, db_url: &str) -> AggregatorConfig {
        let d = self.dir.path();
        let pass = d.join(format!("agg-{}.pass", uuid::Uuid::new_v4().simple()));
        std::fs::write(&pass, format!("{password}\n")).unwrap();
        let text = format!(
            "[aggregator]\nid = \"agg-tls-{id}\"\nbatch_max_wait_ms = 20\nmax_payload_kb = 64\n\n\
             [mqtt]\nurl = \"mqtts://127.0.0.1:{tls}\"\nca_file = \"{ca}\"\n\
             username = \"{USER}\"\npassword_file = \"{pass}\"\n\n\
             [database]\nurl = \"{db_url}\"\n",
            id = uuid::Uuid::new_v4().simple(),
            tls = self.tls,
            ca = d.join("ca.pem").display(),
            pass = pass.display(),
        );
        AggregatorConfig::parse("tls.toml", &text).expect("config")
    }
}

struct Running {
    stats: Arc<IngestStats>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn(cfg: AggregatorConfig, db: Db) -> Running {
        let stats = Arc::new(IngestStats::default());
        let cancel = CancellationToken::new();
        let (s, c) = (stats.clone(), cancel.clone());
        let task = tokio::spawn(async move { ingest::run(&cfg, db, s, c).await });
        Running {
            stats,
            cancel,
            task,
        }
    }

    fn last_error(&self) -> Option<String> {
        self.stats.last_mqtt_error.lock().unwrap().clone()
    }

    /// Cancels ingest and expects it to end cleanly, in bounded time.
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("ingest stops in time")
            .expect("join")
            .expect("ingest ended cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingests_and_acks_over_tls_with_a_private_ca_and_a_password() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let t = sqlite().await;
    let ingest = Running::spawn(broker.aggregator_config(PASSWORD, &t.url), t.db.clone());
    let deadline = Instant::now() + WAIT;
    while !ingest.stats.mqtt_connected.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "ingest not connected over mqtts:// within {WAIT:?}; last MQTT error: {:?}",
            ingest.last_error()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Connected is not yet subscribed: publish once the broker has the aggregator's
    // subscription, i.e. retry the (idempotent) envelope until it is acked.
    let mut gw = gateway_client(broker.plain).await;
    let payload = envelope(
        GW,
        vec![
            rec(
                1,
                1,
                "unit_started",
                json!({"unit":"SN-TLS-1","part":"P-1","work_order":"WO-1","station":"ST10"}),
            ),
            reading(2, 2, 101.5),
            reading(3, 3, 102.0),
            reading(4, 4, 102.5),
        ],
    );
    let deadline = Instant::now() + WAIT;
    let (ack_topic, ack) = loop {
        gw.client
            .publish(topic(GW), QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("publish");
        match tokio::time::timeout(Duration::from_millis(500), gw.acks.recv()).await {
            Ok(Some(a)) => break a,
            Ok(None) => panic!("ack channel closed"),
            Err(_) => assert!(
                Instant::now() < deadline,
                "no ack over TLS ingest; stats: connected={} last error={:?}",
                ingest.stats.mqtt_connected.load(Ordering::Relaxed),
                ingest.last_error()
            ),
        }
    };
    assert_eq!(ack_topic, format!("{ROOT}/plant-a/line-1/{GW}/ack"));
    assert_eq!(ack.epoch.to_string(), EPOCH);
    assert_eq!(ack.ranges, vec![[1, 4]]);
    // Acks come after the commit: everything is already stored, exactly once.
    let db = t.db.clone();
    eventually("records stored", WAIT, || {
        let db = db.clone();
        async move {
            (db.count("readings").await.ok()? == 3 && db.count("events").await.ok()? == 1)
                .then_some(())
        }
    })
    .await;
    assert_eq!(ingest.stats.records_of("reading"), 3);
    assert_eq!(ingest.stats.records_of("unit_started"), 1);
    assert!(t.db.verify_chains().await.unwrap().ok);
    assert!(ingest.stats.mqtt_connected.load(Ordering::Relaxed));
    assert!(
        ingest.stats.unhealthy_reason().is_none(),
        "{:?}",
        ingest.stats.unhealthy_reason()
    );
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_and_never_connects() {
    let Some(broker) = Broker::start().await else {
        return;
    };
    let t = sqlite().await;
    let ingest = Running::spawn(broker.aggregator_config("wrong", &t.url), t.db.clone());
    // The TLS handshake succeeds (the CA is right); the broker then refuses the login with a
    // CONNACK return code. Watch until the refusal is reported, and, while waiting, that the
    // client never counts as connected.
    let deadline = Instant::now() + WAIT;
    let err = loop {
        assert!(
            !ingest.stats.mqtt_connected.load(Ordering::Relaxed),
            "connected with a wrong password"
        );
        assert!(
            !ingest.task.is_finished(),
            "ingest gave up instead of retrying"
        );
        let last = ingest.last_error();
        if let Some(e) = last.as_deref().filter(|e| e.contains("Connection refused")) {
            break e.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no refusal reported within {WAIT:?}; last MQTT error: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        err.contains("NotAuthorized") || err.contains("BadUserNamePassword"),
        "{err}"
    );
    let reason = ingest
        .stats
        .unhealthy_reason()
        .expect("unhealthy while refused");
    assert!(
        // The reason names the broker tried (`[mqtt] urls` rotation), then the refusal.
        reason.starts_with("MQTT broker not connected: mqtts://")
            && reason.contains("Connection refused"),
        "{reason}"
    );
    assert!(!ingest.stats.mqtt_connected.load(Ordering::Relaxed));
    assert_eq!(ingest.stats.messages_received.load(Ordering::Relaxed), 0);
    // Still retrying (with back-off), and it stops promptly when cancelled.
    ingest.stop().await;
}
