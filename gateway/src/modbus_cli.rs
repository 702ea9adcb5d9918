//! The Modbus commands of the CLI: `threadline-gateway probe` (arguments and output; the
//! reading and interpreting is `drivers::modbus::interpret`) and the read plans `check` prints.

use std::process::ExitCode;
use std::time::Duration;

use threadline_gateway::config::GatewayConfig;
use threadline_gateway::drivers::config::{Area, Protocol};
use threadline_gateway::drivers::modbus::{interpret, plan_device};
use threadline_shared::{out, outln};

/// Arguments of `threadline-gateway probe`.
#[derive(clap::Args)]
pub(crate) struct ProbeArgs {
    /// modbus-tcp://HOST:PORT or modbus-rtu:///dev/ttyX?baud=19200&parity=even
    target: String,
    /// Unit (slave) id.
    #[arg(long, default_value_t = 1)]
    unit: u8,
    /// Read holding registers starting at this 0-based address.
    #[arg(long, group = "area")]
    holding: Option<u16>,
    /// Read input registers starting at this 0-based address.
    #[arg(long, group = "area")]
    input: Option<u16>,
    /// Read coils starting at this 0-based address.
    #[arg(long, group = "area")]
    coil: Option<u16>,
    /// Read discrete inputs starting at this 0-based address.
    #[arg(long, group = "area")]
    discrete: Option<u16>,
    /// Registers (or bits) to read.
    #[arg(long, default_value_t = 2)]
    count: u16,
    /// Give up after this long.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

/// Runs `probe`: prints the table, or the reason on stderr with exit code 1.
pub(crate) fn run_probe(a: ProbeArgs) -> ExitCode {
    let (area, start) = match (a.holding, a.input, a.coil, a.discrete) {
        (Some(s), None, None, None) => (Area::Holding, s),
        (None, Some(s), None, None) => (Area::Input, s),
        (None, None, Some(s), None) => (Area::Coil, s),
        (None, None, None, Some(s)) => (Area::Discrete, s),
        _ => {
            eprintln!("probe: give exactly one of --holding, --input, --coil, --discrete ADDR");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("probe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    match rt.block_on(interpret::probe(
        &a.target, a.unit, area, start, a.count, timeout,
    )) {
        Ok(report) => {
            outln!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the read plan of every Modbus device (for `check`). Returns false if a plan failed.
pub(crate) fn print_read_plans(cfg: &GatewayConfig) -> bool {
    let mut ok = true;
    for d in &cfg.device {
        if !matches!(d.protocol, Protocol::ModbusTcp | Protocol::ModbusRtu) {
            continue;
        }
        match plan_device(d) {
            Ok(plan) => out!("{plan}"),
            Err(errors) => {
                ok = false;
                for e in errors {
                    eprintln!("device {:?}: {e}", d.id);
                }
            }
        }
    }
    ok
}
