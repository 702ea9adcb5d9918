//! Helpers for the other crates' integration tests (feature `test-support`; never in a release
//! build of the binaries). They panic with what went wrong: a helper that fails fails its test.
//!
//! - [`Mosquitto`]: a real broker on a free port, ready when it returns, stoppable and
//!   restartable on the same port;
//! - [`TcpProxy`]: a loopback proxy to a real server that a test cuts and restores (an outage);
//!   [`free_port`], [`url_authority`];
//! - [`SubackProxy`]: an MQTT proxy to a real broker that refuses the first N subscriptions;
//! - [`make_tls_certs`]: a private CA and a server certificate for 127.0.0.1 (`openssl`);
//! - [`skip_or_fail`]: a missing outside dependency skips loudly, or fails under CI.

mod certs;
mod mosquitto;
mod net;
mod skip;
mod suback;

pub use certs::{make_tls_certs, run_quiet};
pub use mosquitto::{MOSQUITTO, Mosquitto};
pub use net::{TcpProxy, free_port, url_authority};
pub use skip::{ci, skip_or_fail};
pub use suback::SubackProxy;
