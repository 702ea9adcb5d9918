//! Loopback ports and a TCP proxy that a test can cut and restore.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP port on 127.0.0.1 that was free a moment ago (bound and released; bind it right away).
///
/// It is taken below the kernel's ephemeral range (`ip_local_port_range`), where port 0 would
/// land: the outgoing connections of every process on the machine take their local ports from
/// that range, and one of them could take a port between this call and the server's bind (a
/// nats-server in CI died so). Ports below it are handed out only here, each once per process.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let first = ephemeral_low().max(LOWEST + 1000);
    let span = first - LOWEST;
    // Processes run one after another start at different places of the span.
    let seed = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + (seed + n) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// `host:port` of a URL such as `postgres://user@host:port/db`, with `default_port` when the
/// URL names none.
pub fn url_authority(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let auth = rest.split('/').next().unwrap_or(rest);
    let host = auth.rsplit_once('@').map(|(_, h)| h).unwrap_or(auth);
    if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    }
}

/// A TCP proxy on a free loopback port, in the test process, to a real server: a test takes the
/// server away (every open connection cut, new ones dropped on accept) and gives it back — a
/// real outage as the client sees it, without stopping a server other tests share.
pub struct TcpProxy {
    /// Where clients connect instead of the server.
    pub addr: SocketAddr,
    /// False while cut: accepted connections are dropped at once.
    up: Arc<AtomicBool>,
    /// Bumped on every cut; a connection's task ends when it sees a newer generation.
    generation: Arc<watch::Sender<u64>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to `target` (`host:port`).
    /// Needs a Tokio runtime.
    pub async fn start(target: impl Into<String>) -> TcpProxy {
        let target = target.into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("the proxy's address");
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(watch::channel(0u64).0);
        let accept = {
            let (up, generation) = (up.clone(), generation.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the server is "down"
                    }
                    let target = target.clone();
                    let mut cut = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        TcpProxy {
            addr,
            up,
            generation,
            accept,
        }
    }

    /// `url` with its host and port replaced by the proxy's (user and path kept).
    pub fn route(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
        let (auth, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = auth
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}{}/{path}", self.addr)
    }

    /// Cuts every open connection and drops new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn authority_and_route() {
        assert_eq!(
            url_authority("postgres://u@db.example:6000/x", 5432),
            "db.example:6000"
        );
        assert_eq!(url_authority("postgres://u@db/x", 5432), "db:5432");
        assert_eq!(url_authority("mqtt://127.0.0.1", 1883), "127.0.0.1:1883");
    }

    /// An echo server; returns its address.
    async fn echo() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut tokio::net::TcpStream) -> std::io::Result<[u8; 4]> {
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn proxy_forwards_cuts_and_restores() {
        let proxy = TcpProxy::start(echo().await.to_string()).await;
        assert_eq!(
            proxy.route("postgres://u@127.0.0.1:5432/db"),
            format!("postgres://u@{}/db", proxy.addr)
        );
        let mut open = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        assert_eq!(&round_trip(&mut open).await.expect("forwarded"), b"ping");

        proxy.cut();
        assert!(round_trip(&mut open).await.is_err(), "open connection cut");
        let mut refused = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        assert!(
            round_trip(&mut refused).await.is_err(),
            "new connection dropped"
        );

        proxy.restore();
        let mut again = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        assert_eq!(&round_trip(&mut again).await.expect("forwarded"), b"ping");
    }
}
