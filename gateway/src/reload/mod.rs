//! Live config reload (`kill -HUP`, `systemctl reload threadline-gateway`).
//!
//! The daemon re-reads its file; an invalid one is refused with every problem and the running
//! config stays. A valid one is compared with the running config ([`plan()`]): drivers that
//! changed are restarted, added ones started, removed ones stopped, the station logic is
//! rebuilt from its committed state, and untouched devices keep polling without a gap. Changes
//! the running parts cannot take (the broker, the health endpoint, Sparkplug, the route check)
//! restart the whole gateway in place: same process, same outbox. A new gateway id or data
//! directory is another gateway: refused, it needs a service restart.
//!
//! [`running`] keeps the applied config in `data_dir/running.toml` for
//! `threadline-gateway check --config new.toml --against running`.

pub mod plan;
pub mod running;

use std::path::PathBuf;

pub use plan::{DriverId, Plan, plan};

use crate::config::GatewayConfig;

/// A validated config and the text it was parsed from.
#[derive(Debug, Clone)]
pub struct Reload {
    pub cfg: GatewayConfig,
    pub text: String,
    /// The file it was read from.
    pub source: PathBuf,
}
