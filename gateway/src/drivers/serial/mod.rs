//! Serial barcode / RFID reader driver (placeholder until the driver lands).

use crate::drivers::DriverContext;
use crate::drivers::config::ScannerConfig;

/// Reads one scanner until `ctx.shutdown`, reopening the port when it goes away.
pub async fn run_scanner(cfg: ScannerConfig, ctx: DriverContext) {
    tracing::error!(scanner = %cfg.id, "the serial reader driver is not implemented yet");
    ctx.shutdown.cancelled().await;
}
