//! The `acl_file` printed by the real `threadline-aggregator broker-acl` binary, loaded into a real
//! Mosquitto with `allow_anonymous false` and a `password_file`, checked with real MQTT clients
//! (docs/security.md, "Broker ACLs").
//!
//! Mosquitto drops a denied publish without telling the publisher (MQTT 3.1.1 has no reason
//! codes) and may grant a SUBACK for a denied subscription yet deliver nothing, so every
//! "cannot" is proven by delivery: the forbidden message is sent first and an allowed one after
//! it on an ordered path; the allowed one must be the first thing the subscriber sees.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use threadline_shared::testing::{Mosquitto, skip_or_fail};
use threadline_shared::topic::{DEFAULT_ROOT, Topic, TopicKind};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
const PASSWD: &str = "/usr/bin/mosquitto_passwd";
const AGG: &str = "threadline-aggregator";

/// One connected client and the packets the broker sent it.
struct Client {
    mqtt: AsyncClient,
    rx: mpsc::UnboundedReceiver<Packet>,
}

impl Client {
    async fn connect(port: u16, user: &str, password: &str) -> Client {
        let mut opts = MqttOptions::new(
            format!("{user}-{}", uuid::Uuid::new_v4().simple()),
            "127.0.0.1",
            port,
        );
        opts.set_credentials(user, password);
        opts.set_keep_alive(Duration::from_secs(30));
        let (mqtt, mut eventloop) = AsyncClient::new(opts, 32);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Packet::Disconnect);
                        eprintln!("client event loop ended: {e}");
                        return;
                    }
                }
            }
        });
        let mut c = Client { mqtt, rx };
        match c.next().await {
            Packet::ConnAck(a) if a.code == rumqttc::ConnectReturnCode::Success => {}
            other => panic!("{user}: no successful CONNACK: {other:?}"),
        }
        c
    }

    /// The next packet from the broker (panics after [`WAIT`]).
    async fn next(&mut self) -> Packet {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a packet from the broker in time")
            .expect("the client event loop is running")
    }

    /// Subscribes and returns the SUBACK's return code.
    async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.mqtt.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        loop {
            match self.next().await {
                Packet::SubAck(a) => return a.return_codes[0],
                Packet::PingResp => {}
                other => panic!("waiting for SUBACK of {filter}, got {other:?}"),
            }
        }
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK: when it arrives the broker has
    /// handled the message (queued it to every subscriber allowed to read it, or dropped it).
    async fn publish(&mut self, topic: &str, payload: &str) {
        self.mqtt
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
        loop {
            match self.next().await {
                Packet::PubAck(_) => return,
                Packet::PingResp => {}
                other => panic!("waiting for PUBACK of {topic}, got {other:?}"),
            }
        }
    }

    /// The next application message: (topic, payload).
    async fn message(&mut self) -> (String, String) {
        loop {
            match self.next().await {
                Packet::Publish(p) => {
                    // rumqttc acks QoS 1 deliveries itself.
                    return (p.topic, String::from_utf8(p.payload.to_vec()).unwrap());
                }
                Packet::PingResp | Packet::PubAck(_) => {}
                other => panic!("waiting for a message, got {other:?}"),
            }
        }
    }
}

fn topic(gateway: &str, kind: &str) -> String {
    format!("{DEFAULT_ROOT}/plant-1/line-1/{gateway}/{kind}")
}

/// The ACL from the real binary, a password file from `mosquitto_passwd`, and a broker that
/// refuses anonymous clients. `None` when the tools are missing (and not under CI).
async fn broker(dir: &Path) -> Option<Mosquitto> {
    if !Mosquitto::available() {
        return None;
    }
    if !Path::new(PASSWD).exists() {
        skip_or_fail(&format!(
            "{PASSWD} not found; install mosquitto-clients/mosquitto to run this test"
        ));
        return None;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_threadline-aggregator"))
        .args(["broker-acl", "--gateways", "gw-a,gw-b"])
        .output()
        .unwrap();
    assert!(out.status.success(), "broker-acl: {out:?}");
    let acl = dir.join("threadline.acl");
    std::fs::write(&acl, &out.stdout).unwrap();
    let passwd = dir.join("passwd");
    for (i, user) in [AGG, "gw-a", "gw-b"].into_iter().enumerate() {
        let mut cmd = Command::new(PASSWD);
        if i == 0 {
            cmd.arg("-c");
        }
        let st = cmd
            .arg("-b")
            .arg(&passwd)
            .arg(user)
            .arg(format!("pw-{user}"))
            .output()
            .unwrap();
        assert!(st.status.success(), "mosquitto_passwd {user}: {st:?}");
    }
    // A later allow_anonymous overrides the helper's `allow_anonymous true`.
    Some(
        Mosquitto::start_with(&format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            passwd.display(),
            acl.display()
        ))
        .await,
    )
}

#[tokio::test]
async fn each_gateway_user_is_confined_to_its_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = broker(dir.path()).await else {
        return;
    };

    // Anonymous clients and wrong passwords are refused.
    for (user, pw) in [("", ""), ("gw-a", "wrong")] {
        let mut opts = MqttOptions::new("anon", "127.0.0.1", m.port);
        if !user.is_empty() {
            opts.set_credentials(user, pw);
        }
        let (_c, mut el) = AsyncClient::new(opts, 8);
        let refused = tokio::time::timeout(WAIT, el.poll()).await.unwrap();
        assert!(
            refused.is_err(),
            "{user:?} must be refused, got {refused:?}\n{}",
            m.log()
        );
    }

    let mut agg = Client::connect(m.port, AGG, &format!("pw-{AGG}")).await;
    let mut gw_a = Client::connect(m.port, "gw-a", "pw-gw-a").await;
    let mut gw_b = Client::connect(m.port, "gw-b", "pw-gw-b").await;

    // The aggregator subscribes exactly as ingest does, also with `[mqtt] shared_group`.
    let mut shared = Client::connect(m.port, AGG, &format!("pw-{AGG}")).await;
    let f = Topic::filter(DEFAULT_ROOT, TopicKind::Records, Some("agg"));
    let code = shared.subscribe(&f).await;
    assert!(
        matches!(code, SubscribeReasonCode::Success(_)),
        "{f}: {code:?}"
    );
    for f in [
        Topic::filter(DEFAULT_ROOT, TopicKind::Records, None),
        Topic::filter(DEFAULT_ROOT, TopicKind::Status, None),
    ] {
        let code = agg.subscribe(&f).await;
        assert!(
            matches!(code, SubscribeReasonCode::Success(_)),
            "{f}: {code:?}"
        );
    }
    let code = gw_a.subscribe(&topic("gw-a", "ack")).await;
    assert!(matches!(code, SubscribeReasonCode::Success(_)), "{code:?}");
    let code = gw_b.subscribe(&topic("gw-b", "ack")).await;
    assert!(matches!(code, SubscribeReasonCode::Success(_)), "{code:?}");
    // Denied: Mosquitto may still grant it; delivery is what counts (below).
    let _ = gw_a.subscribe(&topic("gw-b", "ack")).await;

    // gw-a cannot publish gw-b's records; its own arrive (same connection, so in order).
    gw_a.publish(&topic("gw-b", "records"), "forged-b-records")
        .await;
    gw_a.publish(&topic("gw-a", "records"), "a-records").await;
    assert_eq!(
        agg.message().await,
        (topic("gw-a", "records"), "a-records".into()),
        "the forged gw-b records must never reach the aggregator\n{}",
        m.log()
    );
    assert_eq!(
        shared.message().await,
        (topic("gw-a", "records"), "a-records".into())
    );
    // Nor gw-b's status; its own status arrives.
    gw_a.publish(&topic("gw-b", "status"), "forged-b-status")
        .await;
    gw_a.publish(&topic("gw-a", "status"), "a-status").await;
    assert_eq!(
        agg.message().await,
        (topic("gw-a", "status"), "a-status".into())
    );
    // The aggregator reads every gateway's records.
    gw_b.publish(&topic("gw-b", "records"), "b-records").await;
    assert_eq!(
        agg.message().await,
        (topic("gw-b", "records"), "b-records".into())
    );
    assert_eq!(
        shared.message().await,
        (topic("gw-b", "records"), "b-records".into())
    );

    // gw-a cannot publish an ack, neither gw-b's nor its own. Its PUBACK means the broker handled
    // (dropped) it before the aggregator's real ack, so a delivered forgery would come first.
    gw_a.publish(&topic("gw-b", "ack"), "forged-b-ack").await;
    gw_a.publish(&topic("gw-a", "ack"), "forged-a-ack").await;
    agg.publish(&topic("gw-b", "ack"), "real-b-ack").await;
    assert_eq!(
        gw_b.message().await,
        (topic("gw-b", "ack"), "real-b-ack".into()),
        "a forged ack must never reach gw-b\n{}",
        m.log()
    );

    // gw-a reads its own ack but never gw-b's, whatever its SUBACK said (the aggregator's
    // acks go out in order on one connection).
    agg.publish(&topic("gw-b", "ack"), "real-b-ack-2").await;
    agg.publish(&topic("gw-a", "ack"), "real-a-ack").await;
    assert_eq!(
        gw_a.message().await,
        (topic("gw-a", "ack"), "real-a-ack".into()),
        "gw-a must neither read gw-b's ack nor its own forged one"
    );
    assert_eq!(
        gw_b.message().await,
        (topic("gw-b", "ack"), "real-b-ack-2".into())
    );

    // The shared subscriber saw no forged records either: the next is gw-a's own.
    gw_a.publish(&topic("gw-a", "records"), "last").await;
    assert_eq!(
        agg.message().await,
        (topic("gw-a", "records"), "last".into())
    );
    assert_eq!(
        shared.message().await,
        (topic("gw-a", "records"), "last".into())
    );
}
