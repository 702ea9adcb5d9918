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
