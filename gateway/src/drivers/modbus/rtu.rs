//! Modbus RTU: one worker task per serial port, shared by every device (unit id) on that bus.
//!
//! A serial bus carries one request at a time, so devices cannot own the port. Each device's
//! poll loop sends its requests to the port's worker through a bounded queue and awaits the
//! answer; the worker serves them in arrival order. A dead or slow unit therefore costs at most
//! its own timeout per request (and its poll loop backs off after the first failure). After a
//! timeout or I/O error the worker drops the port and reopens it before the next request, which
//! discards any late bytes still in flight.
//!
//! The registry maps the port path to the worker's queue. It holds only a weak sender: when the
//! last device of a port stops, the queue closes and the worker ends (and with it the port).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_modbus::client::Context;

use crate::drivers::config::{DataBits, DeviceConfig, Parity, StopBits};
use crate::drivers::modbus::error::{ModbusError, Unreachable};
use crate::drivers::modbus::link::{
    ReadData, ReadRequest, WriteRequest, call_with_timeout, write_with_timeout,
};

/// Serial line settings of a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    pub path: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: DataBits,
    pub stop_bits: StopBits,
}

impl PortSettings {
    /// From a modbus-rtu device (`None` without `port`).
    pub fn of(cfg: &DeviceConfig) -> Option<PortSettings> {
        Some(PortSettings {
            path: cfg.port.clone()?,
            baud: cfg.baud,
            parity: cfg.parity,
            data_bits: cfg.data_bits,
            stop_bits: cfg.stop_bits,
        })
    }

    /// Silent interval between frames: 3.5 character times, fixed 1750 µs above 19200 baud.
    fn frame_gap(&self) -> Duration {
        if self.baud == 0 || self.baud > 19_200 {
            Duration::from_micros(1750)
        } else {
            Duration::from_micros(38_500_000 / u64::from(self.baud))
        }
    }

    fn open(&self) -> Result<tokio_serial::SerialStream, tokio_serial::Error> {
        let builder = tokio_serial::new(&self.path, self.baud)
            .parity(match self.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .data_bits(match self.data_bits {
                DataBits::Five => tokio_serial::DataBits::Five,
                DataBits::Six => tokio_serial::DataBits::Six,
                DataBits::Seven => tokio_serial::DataBits::Seven,
                DataBits::Eight => tokio_serial::DataBits::Eight,
            })
            .stop_bits(match self.stop_bits {
                StopBits::One => tokio_serial::StopBits::One,
                StopBits::Two => tokio_serial::StopBits::Two,
            });
        tokio_serial::SerialStream::open(&builder)
    }
}

/// One request queued for the port.
struct Job {
    unit: u8,
    timeout: Duration,
    op: Op,
}

/// What a job does, with where its answer goes.
enum Op {
    Read {
        req: ReadRequest,
        reply: oneshot::Sender<Result<ReadData, ModbusError>>,
    },
    /// An interlock write: served in turn with the polls of the bus.
    Write {
        req: WriteRequest,
        reply: oneshot::Sender<Result<(), ModbusError>>,
    },
}

impl Op {
    fn abandoned(&self) -> bool {
        match self {
            Op::Read { reply, .. } => reply.is_closed(),
            Op::Write { reply, .. } => reply.is_closed(),
        }
    }

    fn fail(self, e: ModbusError) {
        match self {
            Op::Read { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Op::Write { reply, .. } => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// Requests a device may have queued on its port. Each device waits for its answer before it
/// sends the next, so this only bounds the number of devices waiting at once.
const QUEUE: usize = 64;

static PORTS: LazyLock<Mutex<HashMap<String, mpsc::WeakSender<Job>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A device's handle on its shared port.
pub struct RtuLink {
    port: String,
    unit: u8,
    tx: mpsc::Sender<Job>,
}

impl RtuLink {
    /// Joins the port's worker, starting it on first use. Must be called inside a tokio runtime.
    /// The first device's line settings win; a device asking for others is logged.
    pub fn register(settings: PortSettings, unit: u8) -> RtuLink {
        let mut ports = PORTS.lock().unwrap_or_else(|p| p.into_inner());
        let live = ports
            .get(&settings.path)
            .and_then(mpsc::WeakSender::upgrade)
            .filter(|tx| !tx.is_closed());
        let tx = match live {
            Some(tx) => tx,
            None => {
                let (tx, rx) = mpsc::channel(QUEUE);
                ports.insert(settings.path.clone(), tx.downgrade());
                tokio::spawn(port_worker(settings.clone(), rx));
                tx
            }
        };
        RtuLink {
            port: settings.path,
            unit,
            tx,
        }
    }

    /// One read through the port's worker.
    pub async fn read(
        &mut self,
        req: ReadRequest,
        timeout: Duration,
    ) -> Result<ReadData, ModbusError> {
        self.submit(timeout, |reply| Op::Read { req, reply }).await
    }

    /// One write through the port's worker (between the polls of the bus's devices).
    pub async fn write(&mut self, req: WriteRequest, timeout: Duration) -> Result<(), ModbusError> {
        self.submit(timeout, |reply| Op::Write { req, reply }).await
    }

    /// Queues the job `op` makes (with where its answer goes) and waits for the answer.
    async fn submit<T>(
        &mut self,
        timeout: Duration,
        op: impl FnOnce(oneshot::Sender<Result<T, ModbusError>>) -> Op,
    ) -> Result<T, ModbusError> {
        let gone = || -> ModbusError {
            Unreachable::Port {
                port: self.port.clone(),
                reason: "port worker stopped".into(),
            }
            .into()
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            unit: self.unit,
            timeout,
            op: op(reply),
        };
        self.tx.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Owns the port; serves queued requests one at a time until every device has gone.
async fn port_worker(settings: PortSettings, mut jobs: mpsc::Receiver<Job>) {
    let mut ctx: Option<Context> = None;
    let gap = settings.frame_gap();
    while let Some(job) = jobs.recv().await {
        if job.op.abandoned() {
            // The device stopped waiting (shutdown): do not spend bus time on it.
            continue;
        }
        let client = match &mut ctx {
            Some(c) => c,
            None => match settings.open() {
                Ok(stream) => ctx.insert(tokio_modbus::client::rtu::attach(stream)),
                Err(e) => {
                    job.op.fail(
                        Unreachable::Port {
                            port: settings.path.clone(),
                            reason: e.to_string(),
                        }
                        .into(),
                    );
                    continue;
                }
            },
        };
        let unreachable = match job.op {
            Op::Read { req, reply } => {
                let res = call_with_timeout(client, job.unit, req, job.timeout).await;
                let bad = matches!(res, Err(ModbusError::Unreachable(_)));
                let _ = reply.send(res);
                bad
            }
            Op::Write { req, reply } => {
                let res = write_with_timeout(client, job.unit, &req, job.timeout).await;
                let bad = matches!(res, Err(ModbusError::Unreachable(_)));
                let _ = reply.send(res);
                bad
            }
        };
        if unreachable {
            // Reopen before the next request: late bytes of this answer must not be parsed as
            // the next unit's reply.
            ctx = None;
            tracing::debug!(port = %settings.path, unit = job.unit, "serial port reopened after failure");
        }
        tokio::time::sleep(gap).await;
    }
}
