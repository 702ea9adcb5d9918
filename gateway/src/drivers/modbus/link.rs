//! One request on the wire: the TCP connection of a device, or its place on a shared serial port.
//!
//! tokio-modbus has no timeouts of its own: every request is wrapped in `tokio::time::timeout`,
//! and after a timeout or an I/O error the client context is DROPPED, so a late reply can never
//! be taken for the answer to the next request.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_modbus::Slave;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;

use crate::drivers::config::Area;
use crate::drivers::modbus::error::{Exception, ModbusError, Unreachable};
use crate::drivers::modbus::rtu::RtuLink;
use crate::drivers::modbus::wire::{ConnectionEnd, WatchedStream};

/// A read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    pub area: Area,
    pub start: u16,
    /// Registers or bits.
    pub count: u16,
}

/// A read's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadData {
    /// Coils / discrete inputs (exactly `count` bits).
    Bits(Vec<bool>),
    /// Holding / input registers (exactly `count` words).
    Words(Vec<u16>),
}

/// A write request (the interlocks of `route::interlock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRequest {
    /// Function 05.
    Coil { address: u16, value: bool },
    /// Function 06 (one word) or 16 (more).
    Registers { address: u16, words: Vec<u16> },
}

/// Performs one write on an open client context; an exception is the device's refusal.
pub(crate) async fn write_with_timeout(
    ctx: &mut Context,
    unit: u8,
    req: &WriteRequest,
    timeout: Duration,
) -> Result<(), ModbusError> {
    use tokio_modbus::client::Writer as _;
    ctx.set_slave(Slave(unit));
    let work = async {
        match req {
            WriteRequest::Coil { address, value } => ctx.write_single_coil(*address, *value).await,
            WriteRequest::Registers { address, words } if words.len() == 1 => {
                ctx.write_single_register(*address, words[0]).await
            }
            WriteRequest::Registers { address, words } => {
                ctx.write_multiple_registers(*address, words).await
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(Unreachable::Timeout {
            ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
        .into()),
        Ok(Err(e)) => Err(Unreachable::from(e).into()),
        Ok(Ok(Err(code))) => Err(Exception::from(code).into()),
        Ok(Ok(Ok(()))) => Ok(()),
    }
}

/// Performs one read on an open client context, checking that the answer has the asked size.
pub(crate) async fn call(
    ctx: &mut Context,
    unit: u8,
    req: ReadRequest,
) -> Result<ReadData, ModbusError> {
    ctx.set_slave(Slave(unit));
    let n = usize::from(req.count);
    let answer = match req.area {
        Area::Coil => ctx
            .read_coils(req.start, req.count)
            .await
            .map(|r| r.map(ReadData::Bits)),
        Area::Discrete => ctx
            .read_discrete_inputs(req.start, req.count)
            .await
            .map(|r| r.map(ReadData::Bits)),
        Area::Input => ctx
            .read_input_registers(req.start, req.count)
            .await
            .map(|r| r.map(ReadData::Words)),
        Area::Holding => ctx
            .read_holding_registers(req.start, req.count)
            .await
            .map(|r| r.map(ReadData::Words)),
    };
    match answer {
        Err(e) => Err(Unreachable::from(e).into()),
        Ok(Err(code)) => Err(Exception::from(code).into()),
        Ok(Ok(ReadData::Bits(mut b))) if b.len() >= n => {
            // Bit replies are padded to whole bytes.
            b.truncate(n);
            Ok(ReadData::Bits(b))
        }
        Ok(Ok(ReadData::Words(w))) if w.len() == n => Ok(ReadData::Words(w)),
        Ok(Ok(other)) => Err(Unreachable::Protocol(format!(
            "asked for {n} values, got {}",
            match other {
                ReadData::Bits(b) => b.len(),
                ReadData::Words(w) => w.len(),
            }
        ))
        .into()),
    }
}

/// `call` under a deadline.
pub(crate) async fn call_with_timeout(
    ctx: &mut Context,
    unit: u8,
    req: ReadRequest,
    timeout: Duration,
) -> Result<ReadData, ModbusError> {
    match tokio::time::timeout(timeout, call(ctx, unit, req)).await {
        Ok(r) => r,
        Err(_) => Err(Unreachable::Timeout {
            ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
        .into()),
    }
}

/// A Modbus TCP device: one connection, opened on demand, dropped after any transport failure.
pub struct TcpLink {
    address: String,
    unit: u8,
    /// The open connection and how it ended, once it has (see `wire`).
    ctx: Option<(Context, ConnectionEnd)>,
}

impl TcpLink {
    pub fn new(address: &str, unit: u8) -> Self {
        TcpLink {
            address: address.to_owned(),
            unit,
            ctx: None,
        }
    }

    /// One read; connects first when needed (the connect shares the request's deadline).
    pub async fn read(
        &mut self,
        req: ReadRequest,
        timeout: Duration,
    ) -> Result<ReadData, ModbusError> {
        let (ctx, end) = match &mut self.ctx {
            Some((ctx, end)) => (ctx, end),
            None => {
                let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                let stream =
                    match tokio::time::timeout(timeout, TcpStream::connect(&self.address)).await {
                        Err(_) => return Err(Unreachable::Timeout { ms }.into()),
                        Ok(Err(e)) => return Err(Unreachable::from(e).into()),
                        Ok(Ok(s)) => s,
                    };
                // Small request / reply frames: do not wait for Nagle.
                let _ = stream.set_nodelay(true);
                let (stream, end) = WatchedStream::new(stream);
                let ctx = tokio_modbus::client::tcp::attach_slave(stream, Slave(self.unit));
                let (ctx, end) = self.ctx.insert((ctx, end));
                (ctx, &mut *end)
            }
        };
        let mut res = call_with_timeout(ctx, self.unit, req, timeout).await;
        if let Err(ModbusError::Unreachable(e)) = &mut res {
            // tokio-modbus reports a closed connection with a stale errno: the stream saw the
            // real end. (A timeout stays a timeout.)
            if !matches!(e, Unreachable::Timeout { .. })
                && let Some(cause) = end.cause()
            {
                *e = cause;
            }
            // A late reply must not be read as the answer to the next request.
            self.ctx = None;
        }
        res
    }
}

/// Where a device's requests go.
pub enum Link {
    Tcp(TcpLink),
    Rtu(RtuLink),
}

impl Link {
    pub async fn read(
        &mut self,
        req: ReadRequest,
        timeout: Duration,
    ) -> Result<ReadData, ModbusError> {
        match self {
            Link::Tcp(l) => l.read(req, timeout).await,
            Link::Rtu(l) => l.read(req, timeout).await,
        }
    }
}
