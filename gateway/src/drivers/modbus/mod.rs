//! modbus driver (placeholder until the driver lands).

use crate::drivers::DriverContext;
use crate::drivers::config::DeviceConfig;

/// Runs one device until `ctx.shutdown`; never returns early on a device failure.
pub async fn run_device(cfg: DeviceConfig, ctx: DriverContext) {
    tracing::error!(device = %cfg.id, "the modbus driver is not implemented yet");
    ctx.shutdown.cancelled().await;
}
