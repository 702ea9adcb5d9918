//! A test whose outside dependency (Mosquitto, PostgreSQL, openssl) is missing is skipped
//! loudly on a developer's machine and fails under CI, where the dependency must be there.

/// True under `CI=true` (or `CI=1`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Panics with `why` under CI; elsewhere prints `SKIPPED: why` (the caller then returns).
pub fn skip_or_fail(why: &str) {
    if ci() {
        panic!("CI=true and {why}");
    }
    eprintln!("SKIPPED: {why}");
}
