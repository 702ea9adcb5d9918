//! `mqtts://` with a private CA (`ca_file`) and username / `password_file` against a real
//! Mosquitto TLS listener that refuses anonymous clients. Certificates are made by `openssl`.

#![allow(clippy::unwrap_used)]

mod delivery_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use delivery_support::*;
use threadline_gateway::config::GatewayConfig;
use threadline_gateway::outbox::read_file_stats;
use threadline_gateway::runtime::{RunOptions, run_with};
use threadline_gateway::test_support::Synthetic;
use tokio_util::sync::CancellationToken;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use threadline_shared::testing::{make_tls_certs as make_certs, run_quiet as run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_over_tls_with_a_private_ca_and_a_password() {
    if !have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if !make_certs(d)
        || !run(
            d,
            "mosquitto_passwd",
            &["-b", "-c", "passwd", "gw-test", "s3cret"],
        )
    {
        eprintln!("SKIPPED: openssl or mosquitto_passwd not available");
        return;
    }
    let (plain, tls) = (free_port(), free_port());
    std::fs::write(
        d.join("mosquitto.conf"),
        format!(
            // `user root`: when the tests run as root, Mosquitto would otherwise switch to the
            // `mosquitto` user, which cannot read the private temp dir (ignored as non-root).
            "user root\nper_listener_settings true\n\
             listener {plain} 127.0.0.1\nallow_anonymous true\n\
             listener {tls} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\n\
             keyfile {0}/server.key\nallow_anonymous false\npassword_file {0}/passwd\n",
            d.display()
        ),
    )
    .unwrap();
    let _broker = KillOnDrop(
        Command::new(MOSQUITTO)
            .arg("-c")
            .arg(d.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("both listeners", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", plain)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", tls)).is_ok()
    })
    .await;
    let acker = Acker::start(plain, "threadline/v1").await;
    // The password file ends with a newline, as editors write it: it is trimmed.
    std::fs::write(d.join("gw.pass"), "s3cret\n").unwrap();
    let data = d.join("data");
    let extra = format!(
        "username = \"gw-test\"\npassword_file = \"{0}/gw.pass\"\nca_file = \"{0}/ca.pem\"",
        d.display()
    );
    let text = gateway_toml(&data, &format!("mqtts://127.0.0.1:{tls}"), &extra, 64);
    let cfg = GatewayConfig::parse("gw.toml", &text).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_with(
        cfg,
        stop.clone(),
        RunOptions {
            synthetic: Some(Synthetic {
                rate_per_s: 5000,
                event_every: 10,
                total: Some(2000),
            }),
        },
    ));
    wait_for("delivered over TLS", Duration::from_secs(20), || {
        acker.count() >= 2000
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let epoch = loop {
        let s = read_file_stats(&outbox_path(&data)).await.unwrap();
        if s.readings + s.events == 0 {
            break s.epoch;
        }
        assert!(Instant::now() < deadline, "acks not processed: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_complete(&acker.seen.lock().unwrap(), epoch, 2000, 10);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    acker.stop().await;
}
