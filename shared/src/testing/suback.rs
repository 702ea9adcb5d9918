//! A loopback MQTT proxy to a real broker that refuses the first N subscriptions: it rewrites
//! the return codes of the first N SUBACKs it forwards to 0x80 (failure), everything else
//! passes untouched. A real broker that refuses a subscription is hard to arrange (Mosquitto
//! 2.0 grants QoS 1 even where its ACL denies the topic; a NATS node does it only around a
//! cluster change), so the tests of the SUBACK checks put this in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

/// MQTT packet type of SUBACK (the high nibble of the first byte).
const SUBACK: u8 = 9;

/// See the module docs.
pub struct SubackProxy {
    /// Where clients connect instead of the broker.
    pub addr: std::net::SocketAddr,
    /// SUBACKs still to refuse.
    left: Arc<AtomicU64>,
    /// SUBACKs refused so far.
    refused: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl SubackProxy {
    /// Listens on a free loopback port and forwards every connection to `target` (`host:port`),
    /// refusing the first `refuse` SUBACKs (over all connections). Needs a Tokio runtime.
    pub async fn start(target: impl Into<String>, refuse: u64) -> SubackProxy {
        let target = target.into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("the proxy's address");
        let left = Arc::new(AtomicU64::new(refuse));
        let refused = Arc::new(AtomicU64::new(0));
        let accept = {
            let (left, refused) = (left.clone(), refused.clone());
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let (target, left, refused) = (target.clone(), left.clone(), refused.clone());
                    tokio::spawn(async move {
                        let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        let (mut c_read, mut c_write) = inbound.into_split();
                        let (mut b_read, mut b_write) = outbound.into_split();
                        tokio::select! {
                            _ = tokio::io::copy(&mut c_read, &mut b_write) => {}
                            _ = to_client(&mut b_read, &mut c_write, &left, &refused) => {}
                        }
                    });
                }
            })
        };
        SubackProxy {
            addr,
            left,
            refused,
            accept,
        }
    }

    /// `mqtt://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// SUBACKs refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Refuses the next `n` SUBACKs too.
    pub fn refuse_more(&self, n: u64) {
        self.left.fetch_add(n, Ordering::SeqCst);
    }
}

impl Drop for SubackProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Forwards broker → client packet by packet, rewriting SUBACKs while `left` > 0.
async fn to_client(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    left: &AtomicU64,
    refused: &AtomicU64,
) -> std::io::Result<()> {
    loop {
        let first = from.read_u8().await?;
        // Remaining length: a varint of up to four bytes.
        let mut header = vec![first];
        let mut len: usize = 0;
        for shift in [0, 7, 14, 21] {
            let b = from.read_u8().await?;
            header.push(b);
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        from.read_exact(&mut body).await?;
        if first >> 4 == SUBACK
            && body.len() > 2
            && left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            // Packet id (2 bytes), then one return code per filter (MQTT 3.1.1).
            for code in &mut body[2..] {
                *code = 0x80;
            }
            refused.fetch_add(1, Ordering::SeqCst);
        }
        to.write_all(&header).await?;
        to.write_all(&body).await?;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};

    use super::*;
    use crate::testing::Mosquitto;

    #[tokio::test]
    async fn refuses_the_first_n_subacks_then_passes_them() {
        if !Mosquitto::available() {
            return;
        }
        let broker = Mosquitto::start().await;
        let proxy = SubackProxy::start(broker.addr(), 2).await;
        let mut o = MqttOptions::new("suback-test", "127.0.0.1", proxy.addr.port());
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(o, 10);
        let mut codes = Vec::new();
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            while codes.len() < 3 {
                match el.poll().await.expect("connection") {
                    Event::Incoming(Packet::ConnAck(_)) => {
                        for f in ["a/1", "a/2", "a/3"] {
                            client.subscribe(f, QoS::AtLeastOnce).await.expect("queued");
                        }
                    }
                    Event::Incoming(Packet::SubAck(s)) => codes.push(s.return_codes),
                    _ => {}
                }
            }
        })
        .await;
        assert!(got.is_ok(), "three SUBACKs within 10 s: {codes:?}");
        assert_eq!(
            codes,
            [
                vec![SubscribeReasonCode::Failure],
                vec![SubscribeReasonCode::Failure],
                vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
            ]
        );
        assert_eq!(proxy.refused(), 2);
    }
}
