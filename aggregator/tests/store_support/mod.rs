//! Test helpers shared by the store and ingest tests: a fresh database per test on either
//! backend, envelopes built from JSON, and a gateway-like MQTT client. The broker, the TCP
//! proxy that cuts a connection and free ports are `threadline_shared::testing`'s.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use threadline_aggregator::ingest::{Incoming, decode};
use threadline_aggregator::store::{Batch, Db};
#[allow(unused_imports)] // like the dead_code above: not every test binary uses every helper
pub use threadline_shared::testing::{Mosquitto, TcpProxy, free_port, url_authority};

pub const ROOT: &str = "threadline/v1";
pub const EPOCH: &str = "6f1c1f00-0000-4000-8000-000000000001";

/// A database that lives as long as the test.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg_drop.take() {
            // Drop runs outside the test's runtime; use a private one on another thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let pool = sqlx::PgPool::connect(&admin).await.ok()?;
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&pool)
                        .await
                        .ok()
                })
            })
            .join();
        }
    }
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Db::connect(&url, 4).await.expect("open sqlite");
    TestDb {
        db,
        url,
        _dir: Some(dir),
        pg_drop: None,
    }
}

pub fn admin_url() -> String {
    std::env::var("THREADLINE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The URL of database `name` on the same server as `admin`.
pub fn with_db(admin: &str, name: &str) -> String {
    let (base, _) = admin.rsplit_once('/').expect("database url has a path");
    format!("{base}/{name}")
}

/// A fresh PostgreSQL database, or `None` (skipped loudly; a failure when CI=true).
pub async fn postgres() -> Option<TestDb> {
    let admin = admin_url();
    let pool = match tokio::time::timeout(Duration::from_secs(5), sqlx::PgPool::connect(&admin))
        .await
    {
        Ok(Ok(p)) => p,
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timeout".to_owned(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PostgreSQL at {admin} unreachable ({why}) and CI=true");
            }
            eprintln!(
                "SKIPPED (PostgreSQL at {admin} unreachable: {why}); set THREADLINE_TEST_DATABASE_URL to run"
            );
            return None;
        }
    };
    let name = format!("tl_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .expect("CREATE DATABASE");
    pool.close().await;
    let url = with_db(&admin, &name);
    let db = Db::connect(&url, 4)
        .await
        .expect("connect to the test database");
    Some(TestDb {
        db,
        url,
        _dir: None,
        pg_drop: Some((admin, name)),
    })
}

/// Generates `#[tokio::test]`s running `$body(db)` against SQLite and PostgreSQL.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let t = $crate::store_support::sqlite().await;
                super::$name(&t.db).await;
            }
            #[tokio::test]
            async fn postgres() {
                let Some(t) = $crate::store_support::postgres().await else { return };
                super::$name(&t.db).await;
            }
        }
    )*};
}

pub fn topic(gw: &str) -> String {
    format!("{ROOT}/plant-a/line-1/{gw}/records")
}

/// An envelope payload for `gw` with these records.
pub fn envelope(gw: &str, records: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "v": 1, "gateway": gw, "plant": "plant-a", "line": "line-1", "epoch": EPOCH,
        "records": records,
    }))
    .expect("json")
}

/// Timestamp for second `s` of a test day.
pub fn ts(s: u32) -> String {
    format!("2026-11-25T08:{:02}:{:02}.000001Z", s / 60, s % 60)
}

/// A batch from raw (topic, payload) messages, decoded like ingest does.
pub fn batch(msgs: &[(String, Vec<u8>)]) -> Batch {
    let mut b = Batch::default();
    for (t, p) in msgs {
        match decode(ROOT, t, p, 64 * 1024) {
            Incoming::Records(e, d) => {
                b.envelopes.push(e);
                b.dead_letters.extend(d);
            }
            Incoming::Status(s) => b.statuses.push(s),
            Incoming::Dead(d) => b.dead_letters.push(d),
            Incoming::Ignored => {}
        }
    }
    b
}

pub fn rec(seq: u64, t: u32, ty: &str, mut fields: Value) -> Value {
    let o = fields.as_object_mut().expect("object");
    o.insert("seq".into(), json!(seq));
    o.insert("ts".into(), json!(ts(t)));
    o.insert("type".into(), json!(ty));
    fields
}

pub fn reading(seq: u64, t: u32, v: f64) -> Value {
    rec(
        seq,
        t,
        "reading",
        json!({"device":"plc","tag":"press.pressure","value":v,"unit":"bar","quality":"good"}),
    )
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long the gateway test client waits for a SUBACK or an ack.
pub const CLIENT_WAIT: Duration = Duration::from_secs(10);

/// A gateway-like test client: publishes envelopes, collects acks.
pub struct Gw {
    pub client: rumqttc::AsyncClient,
    pub acks: tokio::sync::mpsc::UnboundedReceiver<(String, threadline_shared::Ack)>,
}

/// Subscribed to every gateway's ack topic before it returns.
pub async fn gateway_client(port: u16) -> Gw {
    let mut o = rumqttc::MqttOptions::new(
        format!("gw-test-{}", uuid::Uuid::new_v4().simple()),
        "127.0.0.1",
        port,
    );
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
    let (tx, acks) = tokio::sync::mpsc::unbounded_channel();
    let (sub_tx, mut sub_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if let Ok(a) = serde_json::from_slice::<threadline_shared::Ack>(&p.payload) {
                        let _ = tx.send((p.topic.clone(), a));
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = sub_tx.send(());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    client
        .subscribe(format!("{ROOT}/+/+/+/ack"), rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    tokio::time::timeout(CLIENT_WAIT, sub_rx.recv())
        .await
        .expect("suback in time");
    Gw { client, acks }
}

impl Gw {
    pub async fn publish(&self, topic: String, payload: Vec<u8>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
    pub async fn next_ack(&mut self) -> (String, threadline_shared::Ack) {
        tokio::time::timeout(CLIENT_WAIT, self.acks.recv())
            .await
            .expect("ack in time")
            .expect("ack channel")
    }
}
