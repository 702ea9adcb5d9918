//! Modbus errors, shaped by how the driver recovers: a device that *refused* a request (Modbus
//! exception) is alive — keep the connection, mark the affected tags; a device we *could not
//! reach* (I/O error, timeout, garbled reply) — drop the connection, reconnect with backoff.

use std::io;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModbusError {
    /// The device answered with a Modbus exception.
    #[error(transparent)]
    Refused(#[from] Exception),
    /// No usable answer.
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
}

impl ModbusError {
    /// The exception code when the device refused.
    pub fn exception_code(&self) -> Option<u8> {
        match self {
            ModbusError::Refused(e) => Some(e.code),
            ModbusError::Unreachable(_) => None,
        }
    }
}

/// A Modbus exception response (the device is reachable and said no).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("modbus exception: {} (0x{:02x})", exception_name(self.code), self.code)]
pub struct Exception {
    pub code: u8,
}

/// Exception code 0x02, the one the driver works around by splitting reads.
pub const ILLEGAL_DATA_ADDRESS: u8 = 0x02;

/// Names from the Modbus application protocol spec, section 7.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

/// The device could not be reached or did not answer usefully. The message is what a plant
/// engineer reads next to a `bad` tag: it names the cause as the network reported it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreachable {
    /// No (complete) answer within `timeout_ms`: a device that accepts and never answers, a
    /// cable pulled mid-connection, a connect that hangs.
    #[error("timed out after {ms} ms (no answer)")]
    Timeout { ms: u64 },
    /// Nobody listens at the address (the PLC is off, or its Modbus server is stopped).
    #[error("connection refused")]
    Refused,
    /// The peer reset the connection (it restarted or dropped us).
    #[error("connection reset by peer")]
    Reset,
    /// The peer closed the connection while we waited for an answer.
    #[error("connection closed by peer (unexpected eof)")]
    Eof,
    /// We wrote to a connection the peer had closed.
    #[error("broken pipe (connection closed by peer)")]
    BrokenPipe,
    #[error("connection aborted")]
    Aborted,
    #[error("{0}")]
    Io(String),
    /// Reply did not match the request (wrong transaction, function or length).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The shared serial port could not be opened or its worker is gone.
    #[error("serial port {port}: {reason}")]
    Port { port: String, reason: String },
}

impl From<&io::Error> for Unreachable {
    fn from(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Unreachable::Refused,
            io::ErrorKind::ConnectionReset => Unreachable::Reset,
            io::ErrorKind::ConnectionAborted => Unreachable::Aborted,
            io::ErrorKind::BrokenPipe => Unreachable::BrokenPipe,
            io::ErrorKind::UnexpectedEof => Unreachable::Eof,
            io::ErrorKind::TimedOut => Unreachable::Io("timed out (operating system)".into()),
            _ => Unreachable::Io(e.to_string()),
        }
    }
}

impl From<io::Error> for Unreachable {
    fn from(e: io::Error) -> Self {
        Unreachable::from(&e)
    }
}

impl From<tokio_modbus::Error> for Unreachable {
    fn from(e: tokio_modbus::Error) -> Self {
        match e {
            tokio_modbus::Error::Transport(io) => io.into(),
            tokio_modbus::Error::Protocol(p) => Unreachable::Protocol(p.to_string()),
        }
    }
}

impl From<tokio_modbus::ExceptionCode> for Exception {
    fn from(e: tokio_modbus::ExceptionCode) -> Self {
        Exception { code: u8::from(e) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_cause() {
        let e = ModbusError::from(Exception { code: 2 });
        assert_eq!(
            e.to_string(),
            "modbus exception: illegal data address (0x02)"
        );
        assert_eq!(e.exception_code(), Some(2));
        let e = ModbusError::from(Unreachable::Timeout { ms: 1000 });
        assert_eq!(e.to_string(), "timed out after 1000 ms (no answer)");
        for (kind, text) in [
            (io::ErrorKind::ConnectionRefused, "connection refused"),
            (io::ErrorKind::ConnectionReset, "connection reset by peer"),
            (
                io::ErrorKind::BrokenPipe,
                "broken pipe (connection closed by peer)",
            ),
            (
                io::ErrorKind::UnexpectedEof,
                "connection closed by peer (unexpected eof)",
            ),
        ] {
            assert_eq!(Unreachable::from(io::Error::from(kind)).to_string(), text);
        }
    }
}
