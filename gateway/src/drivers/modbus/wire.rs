//! The TCP stream under tokio-modbus, remembering how the connection ended.
//!
//! tokio-modbus turns a connection the peer closed (its reply stream ends) into
//! `io::Error::last_os_error()`: whatever errno an unrelated earlier call left behind — `No such
//! file or directory (os error 2)`, `Success (os error 0)`, `Operation now in progress (os error
//! 115)`, `Resource temporarily unavailable (os error 11)`. [`WatchedStream`] sees the real end
//! of the connection (end of file, or the read / write error the kernel gave) and keeps it, so
//! the link can report that instead.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::error::Unreachable;

/// How the connection ended, as the stream saw it (`None` while it is fine).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionEnd(Arc<Mutex<Option<Unreachable>>>);

impl ConnectionEnd {
    fn set(&self, cause: Unreachable) {
        let mut end = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // The first cause is the real one (a write after the close then fails too).
        end.get_or_insert(cause);
    }

    /// The cause, if the connection has ended.
    pub(crate) fn cause(&self) -> Option<Unreachable> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A TCP stream that records in [`ConnectionEnd`] how it ended.
#[derive(Debug)]
pub(crate) struct WatchedStream {
    inner: TcpStream,
    end: ConnectionEnd,
}

impl WatchedStream {
    pub(crate) fn new(inner: TcpStream) -> (WatchedStream, ConnectionEnd) {
        let end = ConnectionEnd::default();
        (
            WatchedStream {
                inner,
                end: end.clone(),
            },
            end,
        )
    }

    fn note<T>(&self, r: &Poll<io::Result<T>>) {
        if let Poll::Ready(Err(e)) = r {
            self.end.set(Unreachable::from(e));
        }
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() == before && buf.remaining() > 0 {
            // A read of zero bytes into a non-full buffer: the peer closed the connection.
            this.end.set(Unreachable::Eof);
        }
        this.note(&r);
        r
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(&r);
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(&r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
