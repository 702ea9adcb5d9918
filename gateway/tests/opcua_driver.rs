//! OPC UA driver against the simulated OPC UA server (real TCP on 127.0.0.1, real handshakes).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use threadline_gateway::drivers::config::DeviceConfig;
use threadline_gateway::drivers::{DeviceMetrics, DriverContext, TagUpdate, opcua};
use threadline_shared::event::{Quality, TagValue};
use threadline_simulators::opcua::{OpcUaStatus, SimOpcUa, SimOpcUaConfig, SimValue};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

struct Running {
    rx: mpsc::Receiver<TagUpdate>,
    shutdown: CancellationToken,
    metrics: Arc<DeviceMetrics>,
    task: JoinHandle<()>,
    data_dir: tempfile::TempDir,
}

fn device(toml_text: &str) -> DeviceConfig {
    toml::from_str(toml_text).expect("device config")
}

fn start(cfg: DeviceConfig, data_dir: tempfile::TempDir) -> Running {
    let (tx, rx) = mpsc::channel(256);
    let (scans, _) = mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(DeviceMetrics::default());
    let ctx = DriverContext {
        out: tx,
        scans,
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        data_dir: data_dir.path().to_path_buf(),
    };
    let task = tokio::spawn(opcua::run_device(cfg, ctx));
    Running {
        rx,
        shutdown,
        metrics,
        task,
        data_dir,
    }
}

impl Running {
    /// The first update matching `pred` within [`WAIT`] (earlier ones are skipped).
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&TagUpdate) -> bool) -> TagUpdate {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(u)) if pred(&u) => return u,
                Ok(Some(_)) => {}
                Ok(None) => panic!("driver channel closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits until every `(tag, value)` was seen good (in any order).
    async fn wait_all(&mut self, expected: &[(&str, TagValue)]) {
        let mut missing: Vec<(&str, TagValue)> = expected.to_vec();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !missing.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(u)) if u.quality == Quality::Good => {
                    missing.retain(|(t, v)| !(u.tag == *t && u.value.as_ref() == Some(v)));
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("driver channel closed, still missing {missing:?}"),
                Err(_) => panic!("timed out, still missing {missing:?}"),
            }
        }
    }

    async fn stop(self) -> Duration {
        let started = std::time::Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("driver stops within 5 s after shutdown")
            .expect("driver task did not panic");
        started.elapsed()
    }
}

fn is_good(tag: &'static str, v: TagValue) -> impl Fn(&TagUpdate) -> bool {
    move |u| u.tag == tag && u.quality == Quality::Good && u.value.as_ref() == Some(&v)
}

fn sim_vars() -> Vec<(String, SimValue)> {
    vec![
        ("Oven.Zone1.Temperature".into(), SimValue::Double(20.5)),
        ("Oven.Running".into(), SimValue::Bool(true)),
        ("Oven.Count".into(), SimValue::Int32(-3)),
        ("Oven.Program".into(), SimValue::UInt16(7)),
        // An OPC UA Float (f32) that binary cannot hold exactly: carried as written, 21.7, not
        // the widened 21.700000762939453.
        ("Oven.Pressure".into(), SimValue::Float(21.7)),
        ("Oven.Recipe".into(), SimValue::String("R-100".into())),
    ]
}

async fn sim(user: Option<(&str, &str)>) -> SimOpcUa {
    SimOpcUa::start(SimOpcUaConfig {
        port: 0,
        user: user.map(|(u, p)| (u.to_owned(), p.to_owned())),
        variables: sim_vars(),
    })
    .await
    .expect("simulator starts")
}

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[tokio::test]
async fn opcua_values_and_source_timestamps_flow_via_subscription() {
    let sim = sim(None).await;
    let cfg = device(&format!(
        r#"
id = "oven"
protocol = "opcua"
endpoint = "{}"
timeout_ms = 5000
[[tag]]
name = "temp"
node_id = "ns=2;s=Oven.Zone1.Temperature"
sampling_ms = 50
[[tag]]
name = "running"
node_id = "ns=2;s=Oven.Running"
sampling_ms = 50
[[tag]]
name = "count"
node_id = "ns=2;s=Oven.Count"
sampling_ms = 100
[[tag]]
name = "program"
node_id = "ns=2;s=Oven.Program"
[[tag]]
name = "pressure"
node_id = "ns=2;s=Oven.Pressure"
sampling_ms = 50
[[tag]]
name = "recipe"
node_id = "ns=2;s=Oven.Recipe"
[[tag]]
name = "count_scaled"
node_id = "ns=2;s=Oven.Count"
scale = 2.0
offset = 1.0
"#,
        sim.endpoint()
    ));
    let mut dev = start(cfg, data_dir());

    // Initial values of every monitored item, with their OPC UA types mapped.
    dev.wait_all(&[
        ("temp", TagValue::Float(20.5)),
        ("running", TagValue::Bool(true)),
        ("count", TagValue::Int(-3)),
        ("program", TagValue::UInt(7)),
        ("pressure", TagValue::Float(21.7)),
        ("recipe", TagValue::Text("R-100".into())),
        ("count_scaled", TagValue::Float(-5.0)),
    ])
    .await;

    // A change in the server arrives with the server's source timestamp.
    // The server filters by source time against the sampling interval (a timestamp older than
    // the last value + sampling_ms is delayed), so use a distinct one slightly in the future.
    let source_ts = threadline_shared::time::canonical(
        chrono::Utc::now() + chrono::Duration::milliseconds(700),
    );
    sim.set_at(
        "Oven.Zone1.Temperature",
        SimValue::Double(180.25),
        source_ts,
    )
    .unwrap();
    let u = dev
        .wait_for("temp change", is_good("temp", TagValue::Float(180.25)))
        .await;
    assert_eq!(u.ts, source_ts);
    assert_eq!(u.device, "oven");

    sim.set("ns=2;s=Oven.Recipe", SimValue::String("R-200".into()))
        .unwrap();
    dev.wait_for(
        "recipe change",
        is_good("recipe", TagValue::Text("R-200".into())),
    )
    .await;

    assert!(dev.metrics.polls.load(Ordering::Relaxed) >= 9);
    assert!(dev.metrics.last_ok_ms.load(Ordering::Relaxed) > 0);
    assert_eq!(dev.metrics.errors.load(Ordering::Relaxed), 0);
    dev.stop().await;
}

#[tokio::test]
async fn opcua_unknown_and_invalid_node_ids_are_bad_tags_others_flow() {
    let sim = sim(None).await;
    let cfg = device(&format!(
        r#"
id = "oven"
protocol = "opcua"
endpoint = "{}"
timeout_ms = 5000
[[tag]]
name = "missing"
node_id = "ns=2;s=Does.Not.Exist"
sampling_ms = 50
[[tag]]
name = "garbage"
node_id = "Oven Temperature"
[[tag]]
name = "temp"
node_id = "ns=2;s=Oven.Zone1.Temperature"
sampling_ms = 50
"#,
        sim.endpoint()
    ));
    let mut dev = start(cfg, data_dir());
    let g = dev.wait_for("garbage bad", |u| u.tag == "garbage").await;
    assert_eq!(g.quality, Quality::Bad);
    assert!(
        g.error
            .as_deref()
            .unwrap_or("")
            .starts_with("invalid node id"),
        "{g:?}"
    );
    let m = dev.wait_for("missing bad", |u| u.tag == "missing").await;
    assert_eq!(m.quality, Quality::Bad);
    assert_eq!(m.error.as_deref(), Some("BadNodeIdUnknown"));
    assert_eq!(m.value, None);

    sim.set("Oven.Zone1.Temperature", SimValue::Double(99.0))
        .unwrap();
    dev.wait_for("temp flows", is_good("temp", TagValue::Float(99.0)))
        .await;
    dev.stop().await;
}

#[tokio::test]
async fn opcua_server_restart_tags_go_bad_then_good_with_new_values() {
    let mut sim = sim(None).await;
    let cfg = device(&format!(
        r#"
id = "oven"
protocol = "opcua"
endpoint = "{}"
timeout_ms = 2000
[[tag]]
name = "temp"
node_id = "ns=2;s=Oven.Zone1.Temperature"
sampling_ms = 50
[[tag]]
name = "count"
node_id = "ns=2;s=Oven.Count"
sampling_ms = 50
"#,
        sim.endpoint()
    ));
    let mut dev = start(cfg, data_dir());
    dev.wait_for("temp", is_good("temp", TagValue::Float(20.5)))
        .await;

    sim.stop().await;
    let bad = dev
        .wait_for("temp bad", |u| u.tag == "temp" && u.quality == Quality::Bad)
        .await;
    assert!(bad.error.is_some(), "{bad:?}");
    dev.wait_for("count bad", |u| {
        u.tag == "count" && u.quality == Quality::Bad
    })
    .await;
    eprintln!("outage reported as: {:?}", bad.error);

    // Failed reconnects are counted but the tags are reported bad only once per outage.
    let deadline = std::time::Instant::now() + WAIT;
    while dev.metrics.errors.load(Ordering::Relaxed) < 3 {
        assert!(std::time::Instant::now() < deadline, "reconnect attempts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        dev.rx.try_recv().is_err(),
        "no repeated bad updates while the server stays down"
    );

    // Values changed while the server was down appear after it is back.
    sim.set("Oven.Zone1.Temperature", SimValue::Double(42.0))
        .unwrap();
    sim.restart().await.expect("restart on the same port");
    dev.wait_all(&[
        ("temp", TagValue::Float(42.0)),
        ("count", TagValue::Int(-3)),
    ])
    .await;
    sim.set("Oven.Count", SimValue::Int32(5)).unwrap();
    dev.wait_for("count changes again", is_good("count", TagValue::Int(5)))
        .await;
    dev.stop().await;
}

#[tokio::test]
async fn opcua_basic256sha256_creates_client_cert_and_connects() {
    let sim = sim(None).await;
    let dir = data_dir();
    let pki = dir.path().join("pki");
    let cfg = device(&format!(
        r#"
id = "oven"
protocol = "opcua"
endpoint = "{}"
security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
trust_server_certs = "any"
timeout_ms = 10000
[[tag]]
name = "temp"
node_id = "ns=2;s=Oven.Zone1.Temperature"
sampling_ms = 50
"#,
        sim.endpoint()
    ));
    let mut dev = start(cfg, dir);
    dev.wait_for("temp", is_good("temp", TagValue::Float(20.5)))
        .await;
    assert!(pki.join("own/cert.der").is_file(), "client cert created");
    assert!(
        pki.join("private/private.pem").is_file(),
        "client key created"
    );
    sim.set("Oven.Zone1.Temperature", SimValue::Double(21.0))
        .unwrap();
    dev.wait_for("temp change", is_good("temp", TagValue::Float(21.0)))
        .await;

    // A second device (Sign only) on the same data_dir reuses the certificate.
    let cert_before = std::fs::read(pki.join("own/cert.der")).unwrap();
    let cfg = device(&format!(
        r#"
id = "oven-sign"
protocol = "opcua"
endpoint = "{}"
security_policy = "Basic256Sha256"
security_mode = "Sign"
trust_server_certs = "any"
timeout_ms = 10000
[[tag]]
name = "running"
node_id = "ns=2;s=Oven.Running"
"#,
        sim.endpoint()
    ));
    let shared_dir = dev.data_dir.path().to_path_buf();
    let (tx, mut rx) = mpsc::channel(16);
    let (scans, _) = mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(opcua::run_device(
        cfg,
        DriverContext {
            out: tx,
            scans,
            shutdown: shutdown.clone(),
            metrics: Arc::default(),
            data_dir: shared_dir,
        },
    ));
    let u = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("value over Sign")
        .expect("update");
    assert_eq!(u.quality, Quality::Good, "{u:?}");
    assert_eq!(u.value, Some(TagValue::Bool(true)));
    assert_eq!(
        std::fs::read(pki.join("own/cert.der")).unwrap(),
        cert_before
    );
    shutdown.cancel();
    task.await.unwrap();
    dev.stop().await;
}

#[tokio::test]
async fn opcua_username_password_accepted_and_wrong_password_reported() {
    let sim = sim(Some(("operator", "s3cret"))).await;
    let dir = data_dir();
    let good_pass = dir.path().join("good.pass");
    let bad_pass = dir.path().join("bad.pass");
    std::fs::write(&good_pass, "s3cret\n").unwrap();
    std::fs::write(&bad_pass, "nope\n").unwrap();
    let cfg = |id: &str, pass: &std::path::Path| {
        device(&format!(
            r#"
id = "{id}"
protocol = "opcua"
endpoint = "{}"
username = "operator"
password_file = "{}"
timeout_ms = 5000
[[tag]]
name = "temp"
node_id = "ns=2;s=Oven.Zone1.Temperature"
sampling_ms = 50
"#,
            sim.endpoint(),
            pass.display()
        ))
    };
    let mut ok = start(cfg("oven-ok", &good_pass), data_dir());
    ok.wait_for("temp with password", is_good("temp", TagValue::Float(20.5)))
        .await;

    let mut bad = start(cfg("oven-bad", &bad_pass), data_dir());
    let u = bad.wait_for("temp bad", |u| u.tag == "temp").await;
    assert_eq!(u.quality, Quality::Bad, "{u:?}");
    let err = u.error.clone().unwrap_or_default();
    eprintln!("wrong password reported as: {err}");
    assert!(err.contains("Bad"), "status name in the error: {err}");
    assert!(bad.metrics.errors.load(Ordering::Relaxed) >= 1);
    let last = bad.metrics.last_error.lock().unwrap().clone();
    assert!(last.is_some_and(|e| e.contains("Bad")));
    ok.stop().await;
    bad.stop().await;
}

#[tokio::test]
async fn opcua_shutdown_stops_promptly_connected_and_while_reconnecting() {
    let sim = sim(None).await;
    let cfg = device(&format!(
        r#"
id = "oven"
protocol = "opcua"
endpoint = "{}"
[[tag]]
name = "temp"
node_id = "ns=2;s=Oven.Zone1.Temperature"
sampling_ms = 50
"#,
        sim.endpoint()
    ));
    let mut dev = start(cfg, data_dir());
    dev.wait_for("temp", is_good("temp", TagValue::Float(20.5)))
        .await;
    let took = dev.stop().await;
    eprintln!("stopped in {took:?}");
    assert!(took < Duration::from_secs(3), "stopped in {took:?}");

    // Nothing listens on this endpoint: the driver is in its backoff loop.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = device(&format!(
        r#"
id = "nobody"
protocol = "opcua"
endpoint = "opc.tcp://127.0.0.1:{port}/"
[[tag]]
name = "x"
node_id = "ns=2;s=X"
"#
    ));
    let mut dev = start(cfg, data_dir());
    let u = dev.wait_for("x bad", |u| u.tag == "x").await;
    assert_eq!(u.quality, Quality::Bad);
    let took = dev.stop().await;
    eprintln!("stopped in {took:?}");
    assert!(took < Duration::from_secs(1), "stopped in {took:?}");
}

#[tokio::test]
async fn opcua_status_codes_map_to_quality() {
    let sim = sim(None).await;
    let cfg = device(&format!(
        r#"
id = "oven"
protocol = "opcua"
endpoint = "{}"
timeout_ms = 5000
[[tag]]
name = "temp"
node_id = "ns=2;s=Oven.Zone1.Temperature"
sampling_ms = 50
"#,
        sim.endpoint()
    ));
    let mut dev = start(cfg, data_dir());
    dev.wait_for("temp", is_good("temp", TagValue::Float(20.5)))
        .await;

    sim.set_status(
        "Oven.Zone1.Temperature",
        OpcUaStatus::UncertainLastUsableValue,
    )
    .unwrap();
    let u = dev
        .wait_for("uncertain", |u| u.quality == Quality::Uncertain)
        .await;
    assert_eq!(u.value, Some(TagValue::Float(20.5)));
    assert_eq!(u.error.as_deref(), Some("UncertainLastUsableValue"));

    sim.set_status("Oven.Zone1.Temperature", OpcUaStatus::BadSensorFailure)
        .unwrap();
    let u = dev.wait_for("bad", |u| u.quality == Quality::Bad).await;
    assert_eq!(u.value, None);
    assert_eq!(u.error.as_deref(), Some("BadSensorFailure"));

    sim.set("Oven.Zone1.Temperature", SimValue::Double(21.0))
        .unwrap();
    dev.wait_for("good again", is_good("temp", TagValue::Float(21.0)))
        .await;
    dev.stop().await;
}

/// Throughput of data changes through the driver (not a pass/fail test):
/// `cargo test -p threadline-gateway --test opcua_driver opcua_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn opcua_throughput() {
    const TAGS: usize = 500;
    let names: Vec<String> = (0..TAGS).map(|i| format!("V{i:04}")).collect();
    let sim = SimOpcUa::start(SimOpcUaConfig {
        port: 0,
        user: None,
        variables: names
            .iter()
            .map(|n| (n.clone(), SimValue::Int32(0)))
            .collect(),
    })
    .await
    .unwrap();
    let mut text = format!(
        "id = \"bench\"\nprotocol = \"opcua\"\nendpoint = \"{}\"\ntimeout_ms = 5000\n",
        sim.endpoint()
    );
    for n in &names {
        text.push_str(&format!(
            "[[tag]]\nname = \"{n}\"\nnode_id = \"ns=2;s={n}\"\nsampling_ms = 10\n"
        ));
    }
    let mut dev = start(device(&text), data_dir());
    let mut seen = 0;
    while seen < TAGS {
        let u = tokio::time::timeout(WAIT, dev.rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.quality, Quality::Good);
        seen += 1;
    }
    let sim = Arc::new(sim);
    let writer = {
        let sim = sim.clone();
        let names = names.clone();
        tokio::spawn(async move {
            let mut round = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                round += 1;
                for n in &names {
                    sim.set(n, SimValue::Int32(round)).unwrap();
                }
            }
        })
    };
    let window = Duration::from_secs(5);
    let started = std::time::Instant::now();
    let mut count = 0u64;
    while started.elapsed() < window {
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), dev.rx.recv()).await {
            count += 1;
        }
    }
    writer.abort();
    let offered = (window.as_millis() / 20) as u64 * TAGS as u64;
    eprintln!(
        "opcua throughput: {count} data changes in {window:?} = {:.0}/s ({TAGS} tags, {offered} changes offered)",
        count as f64 / window.as_secs_f64()
    );
    dev.stop().await;
}

#[tokio::test]
async fn opcua_more_tags_than_one_subscription_holds() {
    // async-opcua's server allows 1000 monitored items per subscription.
    const TAGS: usize = 1200;
    let names: Vec<String> = (0..TAGS).map(|i| format!("M{i:04}")).collect();
    let sim = SimOpcUa::start(SimOpcUaConfig {
        port: 0,
        user: None,
        variables: names
            .iter()
            .map(|n| (n.clone(), SimValue::UInt16(1)))
            .collect(),
    })
    .await
    .unwrap();
    let mut text = format!(
        "id = \"big\"\nprotocol = \"opcua\"\nendpoint = \"{}\"\ntimeout_ms = 5000\n",
        sim.endpoint()
    );
    for n in &names {
        text.push_str(&format!(
            "[[tag]]\nname = \"{n}\"\nnode_id = \"ns=2;s={n}\"\nsampling_ms = 100\n"
        ));
    }
    let mut dev = start(device(&text), data_dir());
    let mut good = std::collections::HashSet::new();
    while good.len() < TAGS {
        let u = tokio::time::timeout(WAIT, dev.rx.recv())
            .await
            .expect("initial values")
            .expect("update");
        assert_eq!(u.quality, Quality::Good, "{u:?}");
        good.insert(u.tag);
    }
    sim.set("M1199", SimValue::UInt16(9)).unwrap();
    dev.wait_for("last tag changes", is_good("M1199", TagValue::UInt(9)))
        .await;
    dev.stop().await;
}

#[test]
fn opcua_config_refuses_bad_security_and_endpoint() {
    let text = r#"
[gateway]
id = "gw"
plant = "p"
line = "l"
data_dir = "/tmp/gw"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[device]]
id = "oven"
protocol = "opcua"
endpoint = "tcp://127.0.0.1:4840"
security_policy = "Basic128"

[[device]]
id = "oven2"
protocol = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"
security_policy = "Basic256Sha256"
security_mode = "Encrypt"
"#;
    let err = threadline_gateway::config::GatewayConfig::parse("gw.toml", text)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("device[0].endpoint"), "{err}");
    assert!(err.contains("opc.tcp://"), "{err}");
    assert!(err.contains("device[0].security_policy"), "{err}");
    assert!(err.contains("Basic128"), "{err}");
    // A mode that does not exist fails at its own key, with the valid names.
    assert!(err.contains("device[1].security_mode"), "{err}");
    assert!(
        err.contains("unknown variant `Encrypt`, expected one of `None`, `Sign`, `SignAndEncrypt`"),
        "{err}"
    );
}

/// `trust_server_certs` defaults to pinned: the simulator's certificate (unknown to this
/// data_dir) is refused with its thumbprint and the pinning command; `opcua-trust` answered
/// "n" changes nothing; `opcua-trust --yes` pins it, and the running driver connects at its
/// next attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_is_refused_until_pinned() {
    let sim = sim(None).await;
    let dir = data_dir();
    let d = dir.path().to_path_buf();
    let device_toml = format!(
        "id = \"oven\"\nprotocol = \"opcua\"\nendpoint = \"{}\"\nsecurity_policy = \"Basic256Sha256\"\n\
         security_mode = \"SignAndEncrypt\"\ntimeout_ms = 10000\n\
         [[device.tag]]\nname = \"temp\"\nnode_id = \"ns=2;s=Oven.Zone1.Temperature\"\nsampling_ms = 50\n",
        sim.endpoint()
    );
    let gw_toml = format!(
        "[gateway]\nid = \"gw-trust\"\nplant = \"p\"\nline = \"l\"\ndata_dir = \"{}\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n\n[[device]]\n{device_toml}",
        d.display()
    );
    let cfg_file = d.join("gw.toml");
    std::fs::write(&cfg_file, &gw_toml).unwrap();
    let cfg = device(&device_toml.replace("[[device.tag]]", "[[tag]]"));
    let mut dev = start(cfg, dir);
    let refused = dev
        .wait_for("the certificate refused", |u| {
            u.tag == "temp"
                && u.quality == Quality::Bad
                && u.error
                    .as_deref()
                    .is_some_and(|e| e.contains("not trusted"))
        })
        .await;
    let why = refused.error.unwrap();
    assert!(
        why.contains("SHA-1 thumbprint ")
            && why.contains("threadline-gateway opcua-trust --config")
            && why.contains("--device oven")
            && why.contains("trust_server_certs = \"any\""),
        "{why}"
    );
    assert!(
        std::fs::read_dir(d.join("pki/trusted")).map_or(true, |mut r| r.next().is_none()),
        "nothing may be trusted yet"
    );

    let bin = env!("CARGO_BIN_EXE_threadline-gateway");
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write as _;
        let mut child = std::process::Command::new(bin)
            .args(["opcua-trust", "--config"])
            .arg(&cfg_file)
            .args(["--device", "oven"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let wrong = run(&["--device", "nope"], "");
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    let declined = run(&[], "n\n");
    let said = String::from_utf8_lossy(&declined.stdout).into_owned();
    assert_eq!(declined.status.code(), Some(1), "{declined:?}");
    // The thumbprint shown is the one in the refusal.
    let thumbprint = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("thumbprint: "))
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(why.contains(&thumbprint), "{why} / {said}");
    assert!(said.contains("[y/N]"), "{said}");
    assert!(
        std::fs::read_dir(d.join("pki/trusted")).map_or(true, |mut r| r.next().is_none()),
        "declined, yet trusted"
    );
    let pinned = run(&["--yes"], "");
    let said = String::from_utf8_lossy(&pinned.stdout).into_owned();
    assert!(pinned.status.success(), "{pinned:?}");
    assert!(said.contains("trusted: "), "{said}");
    let trusted: Vec<String> = std::fs::read_dir(d.join("pki/trusted"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        trusted.len() == 1 && trusted[0].contains(&thumbprint),
        "{trusted:?}"
    );
    // The running driver connects at its next attempt (backoff ≤ 30 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        match tokio::time::timeout_at(deadline, dev.rx.recv()).await {
            Ok(Some(u)) if u.quality == Quality::Good => {
                assert_eq!(u.value, Some(TagValue::Float(20.5)));
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("no good value after pinning: {other:?}"),
        }
    }
    // Pinning again says so.
    let again = run(&["--yes"], "");
    assert!(
        again.status.success()
            && String::from_utf8_lossy(&again.stdout).contains("already trusted"),
        "{again:?}"
    );
    dev.stop().await;
}
