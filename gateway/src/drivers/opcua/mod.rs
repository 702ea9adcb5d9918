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
//! certificate is created on first start in `<data_dir>/pki/`; a server certificate is accepted
//! only when pinned in `<data_dir>/pki/trusted/` ([`trust`], `threadline-gateway opcua-trust`),
//! or any with `trust_server_certs = "any"`.

mod convert;
mod session;
pub mod trust;

pub(crate) use session::write_session;

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
