//! Crash points for the kill tests (hidden; not for production use).
//!
//! `THREADLINE_FAILPOINT=<point>[@<record type>]` makes the process abort when it reaches
//! `<point>` — with `@<record type>` only in a step that produced a record of that type
//! (`operation_completed`, `packed`, …). `abort` ends the process the way SIGKILL does at that
//! instant: no destructor runs, nothing is flushed or committed. Unset (always, in production),
//! a check costs one load of an initialised `OnceLock`.
//!
//! The points are the instants around the one commit of a station step (the test
//! `gateway/tests/station_crash.rs` kills the real binary at each):
//!
//! - [`BEFORE_STATION_COMMIT`]: the station engine has handled an input — its context changed
//!   in memory, its events exist — and nothing of it is committed;
//! - [`INSIDE_STATION_COMMIT`]: the outbox transaction holds the events and the new context,
//!   `COMMIT` has not run (checked in every append transaction: armed with a record type, the
//!   abort comes in the transaction holding that record);
//! - [`AFTER_STATION_COMMIT`]: committed, the next input not taken yet.

use std::io::Write as _;
use std::sync::OnceLock;

/// The environment variable that arms a failpoint.
pub const ENV: &str = "THREADLINE_FAILPOINT";

pub const BEFORE_STATION_COMMIT: &str = "before-station-commit";
pub const INSIDE_STATION_COMMIT: &str = "inside-station-commit";
pub const AFTER_STATION_COMMIT: &str = "after-station-commit";

/// The armed point, parsed once from [`ENV`].
struct Armed {
    point: String,
    /// Only in a step with a record of this type.
    record_type: Option<String>,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok()?;
            let (point, record_type) = match spec.split_once('@') {
                Some((p, t)) => (p.to_owned(), Some(t.to_owned())),
                None => (spec, None),
            };
            Some(Armed { point, record_type })
        })
        .as_ref()
}

/// Aborts the process if `point` is armed and, with a record type, `types` contains it.
pub(crate) fn hit<'a>(point: &str, mut types: impl Iterator<Item = &'a str>) {
    let Some(a) = armed() else { return };
    if a.point != point {
        return;
    }
    if let Some(want) = &a.record_type
        && !types.any(|t| t == want)
    {
        return;
    }
    let _ = writeln!(
        std::io::stderr(),
        "{ENV}: reached {point}; aborting the process"
    );
    std::process::abort();
}
