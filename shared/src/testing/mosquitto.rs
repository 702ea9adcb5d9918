//! A real Mosquitto broker on a free loopback port, without persistence, started and stopped
//! by the test (and again on the same port, where the clients expect it).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::net::free_port;
use super::skip::skip_or_fail;

/// Where the Debian package puts the broker.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// How long a broker may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// Ports tried when a free port was taken before the broker could bind it.
const PORT_ATTEMPTS: usize = 3;

/// A Mosquitto process with its config and log in a private temporary directory; killed when
/// dropped. Anonymous clients, no persistence: what a stopped broker held is gone.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    /// Config lines after the listener's (e.g. `max_queued_messages 100000`).
    extra_conf: String,
    child: Option<Child>,
}

impl Mosquitto {
    /// True when Mosquitto is installed; otherwise says how to enable the test and returns
    /// false (or panics under `CI=true`).
    pub fn available() -> bool {
        if Path::new(MOSQUITTO).exists() {
            return true;
        }
        skip_or_fail(&format!(
            "{MOSQUITTO} not found; install mosquitto (apt-get install mosquitto) to run this test"
        ));
        false
    }

    /// Starts a broker on a free port and waits until it accepts connections (panics with its
    /// log when it does not).
    pub async fn start() -> Mosquitto {
        Self::start_with("").await
    }

    /// [`Mosquitto::start`] with `extra_conf` appended to the config.
    pub async fn start_with(extra_conf: &str) -> Mosquitto {
        let mut m = Mosquitto {
            port: 0,
            dir: tempfile::tempdir().expect("a temporary directory for mosquitto"),
            extra_conf: extra_conf.to_owned(),
            child: None,
        };
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            m.port = free_port();
            match m.try_up().await {
                Ok(()) => return m,
                // Another process took the port between free_port() and the broker's bind.
                Err(e) if e.contains("in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last}");
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `mqtt://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts the broker again (on the same port) after [`Mosquitto::down`] and waits until it
    /// accepts connections.
    pub async fn up(&mut self) {
        if let Err(e) = self.try_up().await {
            panic!("{e}");
        }
    }

    /// Stops the broker: SIGTERM (graceful) or SIGKILL, and reaps it.
    pub fn down(&mut self, kill: bool) {
        if let Some(mut c) = self.child.take() {
            if kill {
                let _ = c.kill();
            } else {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .status();
            }
            let _ = c.wait();
        }
    }

    /// Kills the broker and starts it again on the same port.
    pub async fn restart(&mut self) {
        self.down(true);
        self.up().await;
    }

    /// What the broker logged so far (every start appends).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    async fn try_up(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "mosquitto is already running");
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n{}",
                self.port, self.extra_conf
            ),
        )
        .map_err(|e| format!("writing {}: {e}", conf.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .map_err(|e| format!("mosquitto.log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("mosquitto.log: {e}"))?;
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting {MOSQUITTO}: {e}"))?;
        self.child = Some(child);
        // Ready when it accepts a connection; an exit before that is the failure.
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "mosquitto on port {} exited ({status}) before listening:\n{}",
                    self.port,
                    self.log()
                ));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.down(true);
                return Err(format!(
                    "mosquitto did not listen on port {} within {READY_WITHIN:?}:\n{}",
                    self.port,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.down(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn accepts(port: u16) -> bool {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn ready_on_return_and_back_on_the_same_port() {
        if !Mosquitto::available() {
            return;
        }
        let mut m = Mosquitto::start_with("max_queued_messages 10\n").await;
        assert!(accepts(m.port).await, "ready when start returns");
        assert_eq!(m.url(), format!("mqtt://127.0.0.1:{}", m.port));
        let other = Mosquitto::start().await;
        assert_ne!(other.port, m.port);

        m.down(false);
        assert!(!accepts(m.port).await, "stopped");
        m.up().await;
        assert!(accepts(m.port).await, "up again on port {}", m.port);
        m.restart().await;
        assert!(accepts(m.port).await, "restarted on port {}", m.port);
        assert!(m.log().contains("mosquitto"), "{}", m.log());
    }
}
