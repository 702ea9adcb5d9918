//! Seq gaps with the real binary and a real Mosquitto: records 1, 2 and 5 of a gateway epoch
//! leave 3..=4 missing — `GET /api/v1/gateways` shows them, `/metrics` counts them, `/healthz`
//! fails once the hole is older than `gap_alarm_s`; when 3 and 4 arrive it all clears.

#![allow(clippy::unwrap_used)]

mod store_support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use store_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_threadline-aggregator");

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` → (status, body).
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let code = buf.get(9..12)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n")?.1.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_gap_is_shown_counted_alarmed_and_cleared() {
    let t = sqlite().await;
    let m = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agg.toml");
    let http = free_port();
    std::fs::write(
        &cfg,
        format!(
            "[aggregator]\nbatch_max_wait_ms = 20\ngap_alarm_s = 1\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\n[database]\nurl = \"{}\"\n",
            m.port, t.url
        ),
    )
    .unwrap();
    let _agg = Kill(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut gw = gateway_client(m.port).await;
    // Ready when the first envelope is acked (the aggregator has subscribed).
    let first = envelope("gw-g", vec![reading(1, 1, 1.0), reading(2, 2, 2.0)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        gw.publish(topic("gw-g"), first.clone()).await;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), gw.acks.recv()).await
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "aggregator never acked"
        );
    }
    gw.publish(topic("gw-g"), envelope("gw-g", vec![reading(5, 5, 5.0)]))
        .await;
    let (_, ack) = gw.next_ack().await;
    assert_eq!(ack.ranges, vec![[5, 5]]);

    let body = eventually("gap shown", Duration::from_secs(10), || async {
        let (code, body) = get(http, "/api/v1/gateways").await?;
        (code == 200 && body.contains("\"count\":2")).then_some(body)
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let gw_row = v["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "gw-g")
        .unwrap();
    assert_eq!(gw_row["gaps"]["count"], 2, "{gw_row}");
    assert_eq!(gw_row["gaps"]["ranges"][0]["from"], 3, "{gw_row}");
    assert_eq!(gw_row["gaps"]["ranges"][0]["to"], 4, "{gw_row}");
    assert_eq!(gw_row["gaps"]["ranges"][0]["epoch"], EPOCH, "{gw_row}");
    let (_, metrics) = get(http, "/metrics").await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "threadline_ingest_seq_gap_records{gateway=\"gw-g\"} 2"),
        "{metrics}"
    );
    // Older than gap_alarm_s = 1: /healthz names it.
    let health = eventually("gap alarm", Duration::from_secs(10), || async {
        let (code, body) = get(http, "/healthz").await?;
        (code == 503).then_some(body)
    })
    .await;
    assert!(
        health.contains("gateway gw-g: 2 records missing; seqs 3..=4"),
        "{health}"
    );

    // The missing records arrive: nothing missing, healthy again.
    gw.publish(
        topic("gw-g"),
        envelope("gw-g", vec![reading(3, 3, 3.0), reading(4, 4, 4.0)]),
    )
    .await;
    eventually("healthy again", Duration::from_secs(10), || async {
        let (code, _) = get(http, "/healthz").await?;
        (code == 200).then_some(())
    })
    .await;
    let (_, body) = get(http, "/api/v1/gateways").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let gw_row = v["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "gw-g")
        .unwrap();
    assert_eq!(gw_row["gaps"]["count"], 0, "{gw_row}");
    let (_, metrics) = get(http, "/metrics").await.unwrap();
    assert!(
        !metrics.contains("seq_gap_records{gateway=\"gw-g\"}"),
        "{metrics}"
    );
}
