//! OPC UA driver: one client session per device, one subscription with one monitored item per
//! tag (sampling interval = the tag's `sampling_ms`, publishing interval = the smallest of them).
//! Nothing is polled: values arrive as data-change notifications with the server's timestamps.
//!
//! Tag quality follows the OPC UA status code (`Good` → good, `Uncertain*` → uncertain,
//! `Bad*` → bad with the code's name as the error). A tag whose node id is malformed or unknown
//! to the server is bad on its own; the device and its other tags keep running. Connection
//! loss marks every tag bad once, then the driver reconnects with jittered exponential backoff
//! (250 ms doubling to 30 s) and recreates the subscription.
//!
//! Security: `None`, or `Basic256Sha256` with `Sign` / `SignAndEncrypt` (default). The client
//! certificate is created on first start in `<data_dir>/pki/`; server certificates are accepted
//! automatically unless placed in `<data_dir>/pki/rejected/` (not yet configurable).

mod convert;
mod session;

use crate::drivers::DriverContext;
use crate::drivers::config::DeviceConfig;

/// Runs one device until `ctx.shutdown`; never returns early on a device failure.
pub async fn run_device(cfg: DeviceConfig, ctx: DriverContext) {
    match session::Device::new(cfg, ctx) {
        // Boxed: the session state machine is a large future.
        (dev, None) => Box::pin(dev.run()).await,
        (dev, Some(e)) => dev.idle_with_error(e).await,
    }
}

/// Checks `security_policy` / `security_mode` of an opcua device (for config validation);
/// the error says what is expected.
pub fn check_security(policy: Option<&str>, mode: Option<&str>) -> Result<(), String> {
    session::security(policy, mode)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks the form of an opcua `endpoint` (`opc.tcp://host:port[/path]`).
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint.strip_prefix("opc.tcp://").ok_or_else(|| {
        format!(
            "endpoint {endpoint:?} must start with opc.tcp:// (e.g. \"opc.tcp://10.0.0.5:4840\")"
        )
    })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("endpoint {endpoint:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert!(check_endpoint("opc.tcp://127.0.0.1:4840").is_ok());
        assert!(check_endpoint("opc.tcp://plc-1:4840/UA/Server").is_ok());
        assert!(check_endpoint("tcp://127.0.0.1:4840").is_err());
        assert!(check_endpoint("opc.tcp://:4840").is_err());
        assert!(check_endpoint("opc.tcp://").is_err());
    }
}
