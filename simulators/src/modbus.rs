//! Simulated Modbus PLCs: a TCP server and an RTU server on a pseudo-terminal, both backed by
//! [`SimBank`] register banks that tests and the plant simulator read and write.
//!
//! Fault injection, per bank: "illegal address" ranges (reads touching them answer exception
//! 0x02), a response delay (to provoke client timeouts), and silence (never answer). The TCP
//! server can be stopped and restarted on the same port; the RTU server serves several unit ids
//! on one pty, each with its own bank, and ignores unit ids it does not know (a dead device).
//!
//! The value encoders here are written independently of the gateway's decoder on purpose, so
//! the end-to-end tests compare two implementations of the byte-order convention:
//! ABCD = big-endian; CDAB = word order reversed; BADC = bytes swapped in each word; DCBA = both.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::{Server as TcpServer, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

/// A Modbus data area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimArea {
    Coil,
    Discrete,
    Input,
    Holding,
}

/// Word / byte order of a multi-register value (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WordOrder {
    #[default]
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

impl WordOrder {
    /// All four, for table-driven tests.
    pub const ALL: [WordOrder; 4] = [
        WordOrder::ABCD,
        WordOrder::CDAB,
        WordOrder::BADC,
        WordOrder::DCBA,
    ];

    /// Registers to store so that a reader using this order sees `be` (big-endian bytes).
    pub fn encode(self, be: &[u8]) -> Vec<u16> {
        let mut words: Vec<u16> = be
            .chunks(2)
            .map(|c| u16::from(c[0]) << 8 | u16::from(*c.get(1).unwrap_or(&0)))
            .collect();
        if matches!(self, WordOrder::BADC | WordOrder::DCBA) {
            for w in &mut words {
                *w = w.rotate_left(8);
            }
        }
        if matches!(self, WordOrder::CDAB | WordOrder::DCBA) {
            words.reverse();
        }
        words
    }
}

/// The four areas, full 16-bit address space each.
pub struct Registers {
    pub coils: Vec<bool>,
    pub discrete: Vec<bool>,
    pub input: Vec<u16>,
    pub holding: Vec<u16>,
}

impl Registers {
    fn new() -> Self {
        Registers {
            coils: vec![false; 65536],
            discrete: vec![false; 65536],
            input: vec![0; 65536],
            holding: vec![0; 65536],
        }
    }

    /// The register area (input / holding); coils and discrete map to holding for safety.
    pub fn words_mut(&mut self, area: SimArea) -> &mut Vec<u16> {
        match area {
            SimArea::Input => &mut self.input,
            _ => &mut self.holding,
        }
    }
}

struct BankInner {
    regs: Mutex<Registers>,
    illegal: Mutex<Vec<(SimArea, Range<u32>)>>,
    delay_ms: AtomicU64,
    silent: AtomicBool,
    requests: AtomicU64,
}

/// A shared register bank (cheap to clone; all clones are the same bank).
#[derive(Clone)]
pub struct SimBank {
    inner: Arc<BankInner>,
}

impl Default for SimBank {
    fn default() -> Self {
        Self::new()
    }
}

impl SimBank {
    pub fn new() -> Self {
        SimBank {
            inner: Arc::new(BankInner {
                regs: Mutex::new(Registers::new()),
                illegal: Mutex::new(Vec::new()),
                delay_ms: AtomicU64::new(0),
                silent: AtomicBool::new(false),
                requests: AtomicU64::new(0),
            }),
        }
    }

    fn regs(&self) -> MutexGuard<'_, Registers> {
        self.inner.regs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bulk access under one lock (the plant simulator and benchmarks update many values).
    pub fn with_regs<R>(&self, f: impl FnOnce(&mut Registers) -> R) -> R {
        f(&mut self.regs())
    }

    /// Writes registers (input or holding) from `addr`; words past 65535 are ignored.
    pub fn set_words(&self, area: SimArea, addr: u16, words: &[u16]) {
        let mut r = self.regs();
        let target = r.words_mut(area);
        for (i, &w) in words.iter().enumerate() {
            if let Some(slot) = target.get_mut(usize::from(addr) + i) {
                *slot = w;
            }
        }
    }

    pub fn set_holding(&self, addr: u16, words: &[u16]) {
        self.set_words(SimArea::Holding, addr, words);
    }

    pub fn set_input(&self, addr: u16, words: &[u16]) {
        self.set_words(SimArea::Input, addr, words);
    }

    pub fn holding(&self, addr: u16, count: u16) -> Vec<u16> {
        let r = self.regs();
        let a = usize::from(addr);
        r.holding[a..(a + usize::from(count)).min(65536)].to_vec()
    }

    pub fn set_coil(&self, addr: u16, v: bool) {
        self.regs().coils[usize::from(addr)] = v;
    }

    pub fn set_discrete(&self, addr: u16, v: bool) {
        self.regs().discrete[usize::from(addr)] = v;
    }

    /// Stores big-endian bytes of a value in the given order.
    pub fn set_be_bytes(&self, area: SimArea, addr: u16, be: &[u8], order: WordOrder) {
        self.set_words(area, addr, &order.encode(be));
    }

    pub fn set_f32(&self, addr: u16, v: f32, order: WordOrder) {
        self.set_be_bytes(SimArea::Holding, addr, &v.to_be_bytes(), order);
    }
    pub fn set_f64(&self, addr: u16, v: f64, order: WordOrder) {
        self.set_be_bytes(SimArea::Holding, addr, &v.to_be_bytes(), order);
    }
    pub fn set_u32(&self, addr: u16, v: u32, order: WordOrder) {
        self.set_be_bytes(SimArea::Holding, addr, &v.to_be_bytes(), order);
    }
    pub fn set_i32(&self, addr: u16, v: i32, order: WordOrder) {
        self.set_be_bytes(SimArea::Holding, addr, &v.to_be_bytes(), order);
    }
    pub fn set_u64(&self, addr: u16, v: u64, order: WordOrder) {
        self.set_be_bytes(SimArea::Holding, addr, &v.to_be_bytes(), order);
    }
    pub fn set_i64(&self, addr: u16, v: i64, order: WordOrder) {
        self.set_be_bytes(SimArea::Holding, addr, &v.to_be_bytes(), order);
    }
    pub fn set_u16(&self, addr: u16, v: u16, order: WordOrder) {
        self.set_be_bytes(SimArea::Holding, addr, &v.to_be_bytes(), order);
    }
    pub fn set_i16(&self, addr: u16, v: i16, order: WordOrder) {
        self.set_be_bytes(SimArea::Holding, addr, &v.to_be_bytes(), order);
    }

    /// Two ASCII characters per register, padded with NULs to `len` registers.
    pub fn set_string(&self, addr: u16, s: &str, len: u16, order: WordOrder) {
        let mut bytes = s.as_bytes().to_vec();
        bytes.resize(usize::from(len) * 2, 0);
        // Strings never swap word order, only bytes within a word.
        let order = match order {
            WordOrder::BADC | WordOrder::DCBA => WordOrder::BADC,
            _ => WordOrder::ABCD,
        };
        self.set_be_bytes(SimArea::Holding, addr, &bytes, order);
    }

    /// Reads touching `range` of `area` answer exception 0x02 (illegal data address).
    pub fn add_illegal(&self, area: SimArea, range: Range<u16>) {
        let r = u32::from(range.start)..u32::from(range.end);
        self.inner
            .illegal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((area, r));
    }

    pub fn clear_illegal(&self) {
        self.inner
            .illegal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Every answer waits this long first (zero = answer at once).
    pub fn set_delay(&self, d: Duration) {
        self.inner.delay_ms.store(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// A silent device reads the request and never answers.
    pub fn set_silent(&self, silent: bool) {
        self.inner.silent.store(silent, Ordering::Relaxed);
    }

    /// Requests seen (answered or not).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    fn touches_illegal(&self, area: SimArea, start: u16, count: u16) -> bool {
        let (s, e) = (u32::from(start), u32::from(start) + u32::from(count));
        self.inner
            .illegal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(a, r)| *a == area && r.start < e && s < r.end)
    }

    /// Answers one request from the bank.
    fn handle(&self, req: &Request<'_>) -> Result<Option<Response>, ExceptionCode> {
        let check = |area: SimArea, start: u16, count: u16, max: u16| {
            if count == 0 || count > max {
                return Err(ExceptionCode::IllegalDataValue);
            }
            if u32::from(start) + u32::from(count) > 65536
                || self.touches_illegal(area, start, count)
            {
                return Err(ExceptionCode::IllegalDataAddress);
            }
            Ok((usize::from(start), usize::from(start) + usize::from(count)))
        };
        match req {
            Request::ReadCoils(a, n) => {
                let (s, e) = check(SimArea::Coil, *a, *n, 2000)?;
                Ok(Some(Response::ReadCoils(self.regs().coils[s..e].to_vec())))
            }
            Request::ReadDiscreteInputs(a, n) => {
                let (s, e) = check(SimArea::Discrete, *a, *n, 2000)?;
                Ok(Some(Response::ReadDiscreteInputs(
                    self.regs().discrete[s..e].to_vec(),
                )))
            }
            Request::ReadHoldingRegisters(a, n) => {
                let (s, e) = check(SimArea::Holding, *a, *n, 125)?;
                Ok(Some(Response::ReadHoldingRegisters(
                    self.regs().holding[s..e].to_vec(),
                )))
            }
            Request::ReadInputRegisters(a, n) => {
                let (s, e) = check(SimArea::Input, *a, *n, 125)?;
                Ok(Some(Response::ReadInputRegisters(
                    self.regs().input[s..e].to_vec(),
                )))
            }
            Request::WriteSingleRegister(a, w) => {
                check(SimArea::Holding, *a, 1, 1)?;
                self.regs().holding[usize::from(*a)] = *w;
                Ok(Some(Response::WriteSingleRegister(*a, *w)))
            }
            Request::WriteMultipleRegisters(a, ws) => {
                let n = u16::try_from(ws.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                let (s, e) = check(SimArea::Holding, *a, n, 123)?;
                self.regs().holding[s..e].copy_from_slice(ws);
                Ok(Some(Response::WriteMultipleRegisters(*a, n)))
            }
            Request::WriteSingleCoil(a, v) => {
                check(SimArea::Coil, *a, 1, 1)?;
                self.regs().coils[usize::from(*a)] = *v;
                Ok(Some(Response::WriteSingleCoil(*a, *v)))
            }
            Request::WriteMultipleCoils(a, vs) => {
                let n = u16::try_from(vs.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                let (s, e) = check(SimArea::Coil, *a, n, 1968)?;
                self.regs().coils[s..e].copy_from_slice(vs);
                Ok(Some(Response::WriteMultipleCoils(*a, n)))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

/// The tokio-modbus service: one bank for any unit id (TCP), or a bank per unit id (RTU).
#[derive(Clone)]
struct SimService {
    any_unit: Option<SimBank>,
    units: Arc<HashMap<u8, SimBank>>,
}

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Answer;

    fn call(&self, req: Self::Request) -> Self::Future {
        let bank = self
            .any_unit
            .clone()
            .or_else(|| self.units.get(&req.slave).cloned());
        Box::pin(async move {
            // An unknown unit id on a bus: nobody answers.
            let Some(bank) = bank else { return Ok(None) };
            bank.inner.requests.fetch_add(1, Ordering::Relaxed);
            if bank.inner.silent.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let delay = bank.inner.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            bank.handle(&req.request)
        })
    }
}

/// A running Modbus TCP simulator (answers any unit id from one bank).
pub struct TcpSim {
    addr: SocketAddr,
    bank: SimBank,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl TcpSim {
    /// Binds `addr` (port 0 = any free port) and serves `bank`.
    pub async fn start(addr: SocketAddr, bank: SimBank) -> io::Result<TcpSim> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut sim = TcpSim {
            addr,
            bank,
            running: None,
        };
        sim.serve(listener);
        Ok(sim)
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let service = SimService {
            any_unit: Some(self.bank.clone()),
            units: Arc::new(HashMap::new()),
        };
        let server = TcpServer::new(listener);
        let abort = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            let on_connected = |stream, peer| {
                let service = service.clone();
                async move { accept_tcp_connection(stream, peer, |_| Ok(Some(service.clone()))) }
            };
            let on_error =
                |e: io::Error| tracing::debug!(error = %e, "modbus sim connection ended");
            if let Err(e) = server.serve_until(&on_connected, on_error, abort).await {
                tracing::warn!(error = %e, "modbus tcp sim stopped");
            }
        });
        self.running = Some((stop, task));
    }

    /// The bound address (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn bank(&self) -> &SimBank {
        &self.bank
    }

    /// Stops listening and closes every open connection (a PLC being switched off).
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            let _ = task.await;
        }
    }

    /// Listens again on the same address (a PLC coming back).
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }
}

impl Drop for TcpSim {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            task.abort();
        }
    }
}

/// A running Modbus RTU simulator on a pseudo-terminal.
pub struct RtuSim {
    path: String,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    /// Our own handle on the slave side: while one is open, the master never reads EIO, so the
    /// gateway can close and reopen the path (as it does after a timeout).
    _slave: tokio_serial::SerialStream,
}

impl RtuSim {
    /// Creates a pty pair and serves `units` (unit id → bank) on its master side. Unit ids not in
    /// the map never answer. The gateway opens [`RtuSim::path`].
    pub fn start(units: HashMap<u8, SimBank>) -> io::Result<RtuSim> {
        use tokio_serial::SerialPort as _;
        let (master, slave) = tokio_serial::SerialStream::pair().map_err(io::Error::other)?;
        let path = slave
            .name()
            .ok_or_else(|| io::Error::other("pty slave has no name"))?;
        let service = SimService {
            any_unit: None,
            units: Arc::new(units),
        };
        let stop = CancellationToken::new();
        let abort = stop.clone().cancelled_owned();
        let server = tokio_modbus::server::rtu::Server::new(master);
        let task = tokio::spawn(async move {
            if let Err(e) = server.serve_until(service, abort).await {
                tracing::warn!(error = %e, "modbus rtu sim stopped");
            }
        });
        Ok(RtuSim {
            path,
            stop,
            task: Some(task),
            _slave: slave,
        })
    }

    /// The serial path for the gateway (`/dev/pts/N`).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for RtuSim {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_follows_the_convention() {
        let be = 0x0102_0304u32.to_be_bytes();
        assert_eq!(WordOrder::ABCD.encode(&be), vec![0x0102, 0x0304]);
        assert_eq!(WordOrder::CDAB.encode(&be), vec![0x0304, 0x0102]);
        assert_eq!(WordOrder::BADC.encode(&be), vec![0x0201, 0x0403]);
        assert_eq!(WordOrder::DCBA.encode(&be), vec![0x0403, 0x0201]);
    }

    #[test]
    fn illegal_ranges_and_limits() {
        let b = SimBank::new();
        b.add_illegal(SimArea::Holding, 10..11);
        assert_eq!(
            b.handle(&Request::ReadHoldingRegisters(5, 6)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert!(b.handle(&Request::ReadHoldingRegisters(5, 5)).is_ok());
        assert!(b.handle(&Request::ReadHoldingRegisters(11, 5)).is_ok());
        assert_eq!(
            b.handle(&Request::ReadHoldingRegisters(65535, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            b.handle(&Request::ReadHoldingRegisters(0, 126)),
            Err(ExceptionCode::IllegalDataValue)
        );
    }
}
