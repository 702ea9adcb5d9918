//! Stopping a daemon: the signals that ask for a graceful shutdown.

/// Returns at the first SIGINT (Ctrl-C) or SIGTERM (`kill`, systemd, `docker stop`), with the
/// signal's name for the log; on other platforms at Ctrl-C.
///
/// If SIGTERM cannot be watched, only SIGINT is; if no signal can be watched at all (the runtime
/// was built without its signal driver), it never returns: the daemon keeps running rather than
/// stopping at once as if asked to.
pub async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => return "SIGTERM",
                r = tokio::signal::ctrl_c() => if r.is_ok() { return "SIGINT" },
            }
            // Ctrl-C cannot be watched: SIGTERM still can.
            term.recv().await;
            return "SIGTERM";
        }
    }
    match tokio::signal::ctrl_c().await {
        Ok(()) => "SIGINT",
        Err(_) => std::future::pending().await,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_ends_the_wait_with_its_name() {
        let wait = super::wait_for_signal();
        tokio::pin!(wait);
        // The first poll installs the handlers (tokio keeps them for the life of the process,
        // so the test process is not killed by the signal below).
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut wait)
                .await
                .is_err(),
            "returned before any signal"
        );
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let name = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("SIGTERM ends the wait");
        assert_eq!(name, "SIGTERM");
    }
}
