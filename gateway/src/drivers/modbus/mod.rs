//! Modbus TCP / RTU driver: decode (`decode`), request planning (`plan`), the wire (`link`,
//! `rtu` for shared serial ports, `wire` for the real cause of a closed TCP connection), the
//! poll loop (`driver`), typed errors (`error`) and raw
//! registers read once and shown in every interpretation (`interpret`, for the `probe` command).

pub mod decode;
mod driver;
pub mod error;
pub mod interpret;
pub mod link;
pub mod plan;
pub mod rtu;
mod wire;

use threadline_shared::event::Quality;

use crate::drivers::config::{DeviceConfig, DeviceKind};
use crate::drivers::{DriverContext, TagUpdate};

pub use error::{Exception, ModbusError, Unreachable};
pub use plan::{DevicePlan, plan_device};

/// Runs one device until `ctx.shutdown`; never returns early on a device failure.
/// RTU devices sharing a `port` share one serial worker (see [`rtu`]).
pub async fn run_device(cfg: DeviceConfig, ctx: DriverContext) {
    let fail = |reason: String| {
        let ctx = ctx.clone();
        let cfg = cfg.clone();
        async move {
            tracing::error!(device = %cfg.id, %reason, "modbus device cannot run");
            let ts = threadline_shared::time::now();
            for t in &cfg.tag {
                let u = TagUpdate {
                    device: cfg.id.clone(),
                    tag: t.name.clone(),
                    value: None,
                    quality: Quality::Bad,
                    error: Some(reason.clone()),
                    ts,
                };
                if ctx.out.send(u).await.is_err() {
                    break;
                }
            }
            ctx.shutdown.cancelled().await;
        }
    };
    let plan = match plan_device(&cfg) {
        Ok(p) => p,
        Err(errors) => {
            let reason = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return fail(format!("bad tag map: {reason}")).await;
        }
    };
    let link = match (cfg.kind(), rtu::PortSettings::of(&cfg)) {
        (Some(DeviceKind::ModbusTcp { address }), _) => {
            link::Link::Tcp(link::TcpLink::new(address, cfg.unit_id))
        }
        (Some(DeviceKind::ModbusRtu { .. }), Some(port)) => {
            link::Link::Rtu(rtu::RtuLink::register(port, cfg.unit_id))
        }
        _ => return fail("not a modbus device with an address / port".into()).await,
    };
    driver::Poller::new(&cfg, plan, link, ctx).run().await;
}
