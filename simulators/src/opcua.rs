//! Simulated OPC UA PLC: an async-opcua server on 127.0.0.1 exposing variables in one namespace
//! (index 2) with string node ids (`ns=2;s=Oven.Zone1.Temperature`).
//!
//! The async-opcua server never samples on its own: every value change goes through
//! [`SimOpcUa::set`], which stores the value and notifies subscribed clients through the node
//! manager. Values live in the simulator, not in the server, so a [`SimOpcUa::stop`] /
//! [`SimOpcUa::restart`] cycle (used by the reconnect tests) brings the server back on the same
//! port with the last values — and values set while stopped appear after the restart.
//!
//! Endpoints: `None`, and `Basic256Sha256` with `Sign` and `SignAndEncrypt`. Client certificates
//! are trusted automatically. The server's PKI directory is a temporary directory owned by the
//! simulator; its RSA key pair is generated once per process and copied into each server's PKI
//! directory, because RSA key generation is slow in debug builds.
//!
//! Port choice: the first start binds `127.0.0.1:0` (or the requested port) and hands the bound
//! listener to the server, so there is no port race. A restart binds the same port again
//! (SO_REUSEADDR is set by tokio on Unix); if another process grabbed the port in between,
//! `restart` fails with [`SimOpcUaError::Bind`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opcua::core::config::Config;
use opcua::crypto::{CertificateStore, SecurityPolicy};
use opcua::server::address_space::{AccessLevel, Variable};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
use opcua::server::{ANONYMOUS_USER_TOKEN_ID, ServerBuilder, ServerHandle, ServerUserToken};
use opcua::types::{
    DataValue, DateTime, MessageSecurityMode, NodeId, StatusCode, UAString, Variant,
};
use tokio::net::TcpListener;

/// OPC UA status codes, for [`SimOpcUa::set_status`].
pub use opcua::types::StatusCode as OpcUaStatus;
use tokio::task::JoinHandle;

/// The namespace URI of the simulated variables (namespace index 2 on a fresh server).
pub const NAMESPACE_URI: &str = "urn:threadline:sim:plc";

const APPLICATION_URI: &str = "urn:threadline:sim:opcua";
const USER_TOKEN_ID: &str = "sim-user";

/// A value of a simulated variable. The variant fixes the OPC UA data type.
#[derive(Debug, Clone, PartialEq)]
pub enum SimValue {
    Bool(bool),
    Int32(i32),
    UInt16(u16),
    Float(f32),
    Double(f64),
    String(String),
}

impl From<SimValue> for Variant {
    fn from(v: SimValue) -> Variant {
        match v {
            SimValue::Bool(b) => Variant::Boolean(b),
            SimValue::Int32(i) => Variant::Int32(i),
            SimValue::UInt16(u) => Variant::UInt16(u),
            SimValue::Float(f) => Variant::Float(f),
            SimValue::Double(d) => Variant::Double(d),
            SimValue::String(s) => Variant::String(UAString::from(s)),
        }
    }
}

impl SimValue {
    /// The value of a Variant of one of the simulator's types (what a client wrote).
    fn from_variant(v: &Variant) -> Option<SimValue> {
        Some(match v {
            Variant::Boolean(b) => SimValue::Bool(*b),
            Variant::Int32(i) => SimValue::Int32(*i),
            Variant::UInt16(u) => SimValue::UInt16(*u),
            Variant::Float(f) => SimValue::Float(*f),
            Variant::Double(d) => SimValue::Double(*d),
            Variant::String(s) => SimValue::String(s.as_ref().to_owned()),
            _ => return None,
        })
    }
}

/// What the simulator exposes.
#[derive(Debug, Clone, Default)]
pub struct SimOpcUaConfig {
    /// TCP port on 127.0.0.1; 0 = any free port (read it back with [`SimOpcUa::port`]).
    pub port: u16,
    /// Optional user name and password accepted in addition to anonymous access.
    pub user: Option<(String, String)>,
    /// Initial variables: string identifier (e.g. `Oven.Zone1.Temperature`) and value.
    pub variables: Vec<(String, SimValue)>,
}

/// Errors of the simulator API.
#[derive(Debug, thiserror::Error)]
pub enum SimOpcUaError {
    #[error("cannot bind 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the server's PKI directory: {0}")]
    Pki(String),
    #[error("cannot build the OPC UA server: {0}")]
    Build(String),
    #[error("unknown variable {0:?}")]
    UnknownNode(String),
    #[error("setting {node:?} failed: {status}")]
    Set { node: String, status: StatusCode },
}

/// A running (or stopped) simulated OPC UA server.
pub struct SimOpcUa {
    port: u16,
    user: Option<(String, String)>,
    /// The current value of every variable, by string identifier; survives restarts.
    values: Arc<Mutex<BTreeMap<String, SimValue>>>,
    /// Holds the PKI directory for the simulator's lifetime (removed on drop).
    pki: tempfile::TempDir,
    running: Option<Running>,
    namespace: u16,
}

struct Running {
    handle: ServerHandle,
    manager: Arc<SimpleNodeManager>,
    task: JoinHandle<()>,
    /// See [`renotify`]; aborted with the server.
    ticker: JoinHandle<()>,
}

impl SimOpcUa {
    /// Starts the server and waits until it accepts connections.
    pub async fn start(cfg: SimOpcUaConfig) -> Result<Self, SimOpcUaError> {
        let pki = tempfile::Builder::new()
            .prefix("threadline-sim-opcua-")
            .tempdir()
            .map_err(|e| SimOpcUaError::Pki(e.to_string()))?;
        let values = cfg.variables.into_iter().collect();
        let mut sim = SimOpcUa {
            port: cfg.port,
            user: cfg.user,
            values: Arc::new(Mutex::new(values)),
            pki,
            running: None,
            namespace: 2,
        };
        sim.launch().await?;
        Ok(sim)
    }

    /// The endpoint URL clients connect to, e.g. `opc.tcp://127.0.0.1:48401/`.
    pub fn endpoint(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/", self.port)
    }

    /// The TCP port (fixed for the simulator's lifetime, also across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The namespace index of the simulated variables (2).
    pub fn namespace(&self) -> u16 {
        self.namespace
    }

    /// The full node id string of a variable, e.g. `ns=2;s=Oven.Zone1.Temperature`.
    pub fn node_id(&self, name: &str) -> String {
        format!("ns={};s={name}", self.namespace)
    }

    /// Whether the server is currently running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Sets a variable (identifier as `Oven.Temp` or `ns=2;s=Oven.Temp`) and notifies subscribers;
    /// source timestamp = now.
    pub fn set(&self, node: &str, value: SimValue) -> Result<(), SimOpcUaError> {
        self.set_at(node, value, chrono::Utc::now())
    }

    /// Like [`SimOpcUa::set`] with an explicit source timestamp. Note the server filters by
    /// source time: a change stamped less than a monitored item's sampling interval after the
    /// previous one is delivered late (at previous + interval), as a sampling PLC would.
    pub fn set_at(
        &self,
        node: &str,
        value: SimValue,
        source_ts: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), SimOpcUaError> {
        let name = self.strip_ns(node).to_owned();
        {
            let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
            let Some(slot) = values.get_mut(&name) else {
                return Err(SimOpcUaError::UnknownNode(node.to_owned()));
            };
            *slot = value.clone();
        }
        self.publish(&name, Some(value), StatusCode::Good, source_ts)
    }

    /// Keeps the value but changes the variable's status (e.g. `StatusCode::BadSensorFailure`,
    /// `StatusCode::UncertainLastUsableValue`); the next [`SimOpcUa::set`] makes it good again.
    /// A status is not kept across a restart.
    pub fn set_status(&self, node: &str, status: StatusCode) -> Result<(), SimOpcUaError> {
        let name = self.strip_ns(node).to_owned();
        let value = self
            .get(&name)
            .ok_or_else(|| SimOpcUaError::UnknownNode(node.to_owned()))?;
        self.publish(&name, Some(value), status, chrono::Utc::now())
    }

    fn publish(
        &self,
        name: &str,
        value: Option<SimValue>,
        status: StatusCode,
        source_ts: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), SimOpcUaError> {
        let Some(r) = &self.running else {
            return Ok(());
        };
        let id = NodeId::new(self.namespace, name);
        let dv = DataValue {
            value: value.map(Variant::from),
            status: Some(status),
            source_timestamp: Some(DateTime::from(source_ts)),
            server_timestamp: Some(DateTime::now()),
            ..Default::default()
        };
        r.manager
            .set_value(r.handle.subscriptions(), &id, None, dv)
            .map_err(|status| SimOpcUaError::Set {
                node: name.to_owned(),
                status,
            })
    }

    /// The current value of a variable: the last [`SimOpcUa::set`], or what a client wrote
    /// since (every variable is writable, as a PLC's HMI tags are).
    pub fn get(&self, node: &str) -> Option<SimValue> {
        let name = self.strip_ns(node);
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(written) = self.written(name) {
            // Kept across a restart, like a value the simulator set.
            if let Some(slot) = values.get_mut(name) {
                *slot = written.clone();
            }
            return Some(written);
        }
        values.get(name).cloned()
    }

    /// The variable's value in the running server's address space.
    fn written(&self, name: &str) -> Option<SimValue> {
        use opcua::types::{AttributeId, DataEncoding, NumericRange, TimestampsToReturn};
        let r = self.running.as_ref()?;
        let space = r.manager.address_space().read();
        let dv = space
            .find(&NodeId::new(self.namespace, name))?
            .as_node()
            .get_attribute(
                TimestampsToReturn::Neither,
                AttributeId::Value,
                &NumericRange::None,
                &DataEncoding::Binary,
            )?;
        dv.value.as_ref().and_then(SimValue::from_variant)
    }

    /// Stops the server: open sessions are closed, the port is released. Idempotent.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.ticker.abort();
            r.handle.cancel();
            let mut task = r.task;
            // The server waits for its connections to close; do not let a stuck one hang us.
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Starts the server again on the same port with the current values. No-op when running.
    pub async fn restart(&mut self) -> Result<(), SimOpcUaError> {
        if self.running.is_some() {
            return Ok(());
        }
        self.launch().await
    }

    fn strip_ns<'a>(&self, node: &'a str) -> &'a str {
        let prefix = format!("ns={};s=", self.namespace);
        node.strip_prefix(prefix.as_str()).unwrap_or(node)
    }

    async fn launch(&mut self) -> Result<(), SimOpcUaError> {
        let listener = bind(self.port).await?;
        let addr: SocketAddr = listener
            .local_addr()
            .map_err(|source| SimOpcUaError::Bind {
                port: self.port,
                source,
            })?;
        self.port = addr.port();
        let endpoint = self.endpoint();

        let mut tokens = vec![ANONYMOUS_USER_TOKEN_ID];
        if self.user.is_some() {
            tokens.push(USER_TOKEN_ID);
        }
        let mut builder = ServerBuilder::new()
            .application_name("Threadline simulated PLC")
            .application_uri(APPLICATION_URI)
            .product_uri(APPLICATION_URI)
            .host("127.0.0.1")
            .port(self.port)
            .pki_dir(self.pki.path())
            .create_sample_keypair(true)
            .trust_client_certs(true)
            .discovery_urls(vec![endpoint])
            .with_node_manager(simple_node_manager(
                NamespaceMetadata {
                    namespace_uri: NAMESPACE_URI.to_owned(),
                    ..Default::default()
                },
                "threadline-sim",
            ))
            .add_endpoint(
                "none",
                (
                    "/",
                    SecurityPolicy::None,
                    MessageSecurityMode::None,
                    &tokens as &[&str],
                ),
            )
            .add_endpoint(
                "basic256sha256_sign",
                (
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::Sign,
                    &tokens as &[&str],
                ),
            )
            .add_endpoint(
                "basic256sha256_sign_encrypt",
                (
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                    &tokens as &[&str],
                ),
            );
        if let Some((user, pass)) = &self.user {
            builder = builder.add_user_token(
                USER_TOKEN_ID,
                ServerUserToken::user_pass(user.as_str(), pass.as_str()),
            );
        }
        let pki = self.pki.path().to_path_buf();
        let desc = builder.config().application_description();
        // Key generation (first start only) and file writes are blocking.
        tokio::task::spawn_blocking(move || install_server_keys(&pki, desc))
            .await
            .map_err(|e| SimOpcUaError::Pki(e.to_string()))??;

        let (server, handle) = builder.build().map_err(SimOpcUaError::Build)?;
        let manager = handle
            .node_managers()
            .get_of_type::<SimpleNodeManager>()
            .ok_or_else(|| SimOpcUaError::Build("simple node manager missing".into()))?;
        let ns = handle
            .get_namespace_index(NAMESPACE_URI)
            .ok_or_else(|| SimOpcUaError::Build("simulator namespace missing".into()))?;
        self.namespace = ns;

        {
            let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
            let folder = NodeId::new(ns, "Sim");
            let mut space = manager.address_space().write();
            space.add_folder(&folder, "Sim", "Sim", &NodeId::objects_folder_id());
            let now = DateTime::now();
            let vars = values
                .iter()
                .map(|(name, value)| {
                    let id = NodeId::new(ns, name.as_str());
                    let mut var = Variable::new(
                        &id,
                        name.as_str(),
                        name.as_str(),
                        Variant::from(value.clone()),
                    );
                    // Writable by clients (the gateway's OPC UA interlocks write here).
                    let rw = AccessLevel::CURRENT_READ | AccessLevel::CURRENT_WRITE;
                    var.set_access_level(rw);
                    var.set_user_access_level(rw);
                    var.set_data_value(DataValue {
                        value: Some(value.clone().into()),
                        status: Some(StatusCode::Good),
                        source_timestamp: Some(now),
                        server_timestamp: Some(now),
                        ..Default::default()
                    });
                    var
                })
                .collect();
            let _ = space.add_variables(vars, &folder);
        }

        let ids: Vec<NodeId> = {
            let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
            values.keys().map(|k| NodeId::new(ns, k.as_str())).collect()
        };
        let ticker = tokio::spawn(renotify(handle.clone(), manager.clone(), ids));
        let task = tokio::spawn(async move {
            if let Err(e) = server.run_with(listener).await {
                tracing::error!("simulated OPC UA server stopped with an error: {e}");
            }
        });
        self.running = Some(Running {
            handle,
            manager,
            task,
            ticker,
        });
        Ok(())
    }
}

impl Drop for SimOpcUa {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.ticker.abort();
            r.handle.cancel();
        }
    }
}

/// Works around async-opcua 0.19 losing a value that arrived faster than a monitored item's
/// sampling interval: the server parks it ("skipped", re-stamped to last sample + interval) and
/// ticks the item only once, before that time has come, so the value would wait for the next
/// change. Re-offering the current values periodically lets the server release parked values
/// when they are due; unchanged values are filtered out by the server, so nothing is duplicated.
async fn renotify(handle: ServerHandle, manager: Arc<SimpleNodeManager>, ids: Vec<NodeId>) {
    use opcua::types::{AttributeId, TimestampsToReturn};
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let space = manager.address_space().read();
        handle.subscriptions().maybe_notify(
            ids.iter().map(|id| (id, AttributeId::Value)),
            |id, attribute, range, encoding| {
                space.find(id)?.as_node().get_attribute(
                    TimestampsToReturn::Both,
                    attribute,
                    range,
                    encoding,
                )
            },
        );
    }
}

async fn bind(port: u16) -> Result<TcpListener, SimOpcUaError> {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| SimOpcUaError::Bind { port, source })
}

/// The server key pair, generated once per process (RSA key generation takes seconds in debug
/// builds) and copied into each simulator's PKI directory.
fn install_server_keys(
    pki: &Path,
    desc: opcua::types::ApplicationDescription,
) -> Result<(), SimOpcUaError> {
    /// DER certificate and PEM private key, or why they could not be created.
    type Keys = Result<(Vec<u8>, Vec<u8>), String>;
    static KEYS: OnceLock<Keys> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cert = dir.path().join("cert.der");
        let key = dir.path().join("private.pem");
        CertificateStore::create_certificate_and_key(&desc.into(), true, &cert, &key)?;
        let cert = std::fs::read(&cert).map_err(|e| e.to_string())?;
        let key = std::fs::read(&key).map_err(|e| e.to_string())?;
        Ok((cert, key))
    });
    let (cert, key) = keys.as_ref().map_err(|e| SimOpcUaError::Pki(e.clone()))?;
    let write = |rel: &str, bytes: &[u8]| -> Result<(), SimOpcUaError> {
        let path: PathBuf = pki.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| SimOpcUaError::Pki(e.to_string()))?;
        }
        std::fs::write(&path, bytes).map_err(|e| SimOpcUaError::Pki(e.to_string()))
    };
    write("own/cert.der", cert)?;
    write("private/private.pem", key)
}
