//! Shared helpers for the end-to-end tests: the real binaries as child processes, a real
//! Mosquitto on a free port, a fresh PostgreSQL database per test, polling with deadlines, and
//! the comparison of the aggregator's answers with the plant simulator's ground truth.
//!
//! - `bins`: building and finding the binaries under test ([`binaries`]);
//! - `process`: a child process with its log ([`Proc`]), polling with a deadline ([`wait_for`]);
//! - `database`: a fresh PostgreSQL database ([`TestDb`]) and the duplicate checks on it;
//! - `api`: a JSON client of the aggregator's HTTP API ([`Api`]);
//! - `truth`: the plant's ground truth and what a trace must reach by it;
//! - `verify`: the aggregator's answers held against the truth, one difference per line;
//! - `plant`: the whole plant under test as separate processes ([`PlantEnv`]);
//! - `scaleout`: synthetic gateways, aggregator replicas, NATS servers and clusters, and the
//!   stored-exactly-once checks of the scale-out tests.
//!
//! The broker, the database proxy and the free ports are [`threadline_shared::testing`]'s,
//! the same the gateway's and the aggregator's own tests use.

#![allow(clippy::unwrap_used)]

mod api;
mod bins;
mod database;
mod plant;
mod process;
mod scaleout;
mod truth;
mod verify;

pub use api::Api;
pub use bins::{Bins, binaries, workspace_root};
pub use database::{TestDb, duplicates};
pub use plant::{PlantEnv, PlantRun};
pub use process::{Proc, wait_for};
pub use scaleout::{
    Aggregator, NATS_SERVER, Nats, NatsCluster, Stored, SynthGateway, all_stored_once, check,
    metric, stored, tail,
};
pub use threadline_shared::testing::{
    Mosquitto, SubackProxy, TcpProxy, free_port, skip_or_fail, url_authority,
};
pub use truth::{expected_backward, expected_shipment_backward, post_master_data, read_truth};
pub use verify::{
    audit_ok, diff_recall, diff_unit_report, rejected_scans, scan_rejections, trace_nodes,
    verify_all,
};
