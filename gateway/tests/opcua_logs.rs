//! A normal OPC UA configuration logs no errors: with `security_policy = "None"` the client
//! has no certificate and needs none, and connecting must not log that it is missing. Logs are
//! captured with a tracing subscriber for the whole test process (the client is built on a
//! blocking thread, outside any thread-local subscriber), against the OPC UA simulator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use threadline_gateway::drivers::config::DeviceConfig;
use threadline_gateway::drivers::{DeviceMetrics, DriverContext, opcua};
use threadline_shared::event::Quality;
use threadline_simulators::opcua::{SimOpcUa, SimOpcUaConfig, SimValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt as _;

/// Every event at WARN or above: (level, target, message and fields).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(tracing::Level, String, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::WARN {
            return;
        }
        let mut text = String::new();
        event.record(&mut Fields(&mut text));
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push((
            *meta.level(),
            meta.target().to_owned(),
            text,
        ));
    }
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_none_connects_without_logging_errors() {
    let captured = Captured::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(captured.clone()))
        .expect("the only subscriber of this test process");

    let sim = SimOpcUa::start(SimOpcUaConfig {
        port: 0,
        user: None,
        variables: vec![("Oven.Temp".into(), SimValue::Double(20.5))],
    })
    .await
    .expect("simulator starts");
    let cfg: DeviceConfig = toml::from_str(&format!(
        "id = \"oven\"\nprotocol = \"opcua\"\nendpoint = \"{}\"\nsecurity_policy = \"None\"\n\
         timeout_ms = 5000\n[[tag]]\nname = \"temp\"\nnode_id = \"{}\"\nsampling_ms = 50\n",
        sim.endpoint(),
        sim.node_id("Oven.Temp")
    ))
    .expect("device config");
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, mut rx) = mpsc::channel(64);
    let (scans, _) = mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(opcua::run_device(
        cfg,
        DriverContext {
            out,
            scans,
            shutdown: shutdown.clone(),
            metrics: Arc::new(DeviceMetrics::default()),
            data_dir: dir.path().to_owned(),
        },
    ));
    let first = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a value within 20 s")
        .expect("driver running");
    assert_eq!(first.quality, Quality::Good, "{first:?}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("driver stops")
        .expect("driver did not panic");

    let events = captured.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let errors: Vec<_> = events
        .iter()
        .filter(|(level, _, _)| *level == tracing::Level::ERROR)
        .collect();
    assert!(
        errors.is_empty(),
        "a normal connect logged errors: {errors:#?}"
    );
    drop(sim);
}
