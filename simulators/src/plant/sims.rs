//! The plant's devices: one simulated Modbus TCP server per PLC and one pseudo-terminal scanner
//! per `[[scanner]]` of the gateway configs, bound to the floor actions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use threadline_gateway::config::{Area, Protocol};

use super::config::LoadedPlant;
use super::endpoints::Endpoints;
use super::floor::{Floor, FloorError, SimValue};
use super::tagmap::{RegisterWrite, TagMap};
use crate::modbus::{SimBank, TcpSim};
use crate::scanner::SimScanner;

/// How to start the devices.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Listen on free ports instead of the `listen` addresses of `plant.toml`.
    pub any_port: bool,
    /// Link each scanner's `port` path of the gateway configs to its pseudo-terminal, so that
    /// the configs work unchanged.
    pub link_scanners: bool,
}

/// Why the devices could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "device {id}: cannot listen on {addr}: {source} (is another simulator running? use free ports with --any-port)"
    )]
    Listen {
        id: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("device {id}: {addr:?} is not a socket address")]
    Address { id: String, addr: String },
    #[error("scanner {id}: {source}")]
    Scanner { id: String, source: std::io::Error },
    #[error("scanner {id}: cannot link {link}: {source}")]
    Link {
        id: String,
        link: PathBuf,
        source: std::io::Error,
    },
}

/// Running device simulators of the plant.
pub struct SimPlant {
    tags: TagMap,
    modbus: BTreeMap<String, TcpSim>,
    scanners: BTreeMap<String, Mutex<SimScanner>>,
    /// Links this plant created (removed on drop).
    links: Vec<PathBuf>,
}

impl SimPlant {
    /// Starts a Modbus TCP simulator for every Modbus TCP device of the gateway configs and a
    /// pseudo-terminal for every scanner.
    pub async fn start(plant: &LoadedPlant, opts: &StartOptions) -> Result<SimPlant, StartError> {
        let tags = TagMap::from_configs(plant.gateways.iter().map(|(_, c)| c));
        let mut modbus = BTreeMap::new();
        let mut scanners = BTreeMap::new();
        let mut links = Vec::new();
        for (_, cfg) in &plant.gateways {
            for d in &cfg.device {
                if d.protocol != Protocol::ModbusTcp || modbus.contains_key(&d.id) {
                    continue;
                }
                let listen = if opts.any_port {
                    "127.0.0.1:0".to_owned()
                } else {
                    plant
                        .file
                        .device
                        .iter()
                        .find(|x| x.id == d.id)
                        .map(|x| x.listen.clone())
                        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
                };
                let addr: SocketAddr = listen.parse().map_err(|_| StartError::Address {
                    id: d.id.clone(),
                    addr: listen.clone(),
                })?;
                let sim = TcpSim::start(addr, SimBank::new())
                    .await
                    .map_err(|source| StartError::Listen {
                        id: d.id.clone(),
                        addr: listen.clone(),
                        source,
                    })?;
                modbus.insert(d.id.clone(), sim);
            }
            for s in &cfg.scanner {
                // Only serial readers are simulated (a pty behind their port); a HID scanner
                // reads an evdev node, which this simulator does not provide.
                let Some(port) = s.port.as_deref() else {
                    continue;
                };
                if scanners.contains_key(&s.id) {
                    continue;
                }
                let (sim, path) = SimScanner::new().map_err(|source| StartError::Scanner {
                    id: s.id.clone(),
                    source,
                })?;
                if opts.link_scanners {
                    let link = PathBuf::from(port);
                    let made = (|| {
                        if let Some(dir) = link.parent() {
                            std::fs::create_dir_all(dir)?;
                        }
                        // A link left by an earlier run points at a pty that is gone.
                        if link.symlink_metadata().is_ok() {
                            std::fs::remove_file(&link)?;
                        }
                        std::os::unix::fs::symlink(&path, &link)
                    })();
                    made.map_err(|source| StartError::Link {
                        id: s.id.clone(),
                        link: link.clone(),
                        source,
                    })?;
                    links.push(link);
                }
                scanners.insert(s.id.clone(), Mutex::new(sim));
            }
        }
        Ok(SimPlant {
            tags,
            modbus,
            scanners,
            links,
        })
    }

    /// Where everything is: the real listen addresses and the scanners' port paths.
    pub fn endpoints(&self) -> Endpoints {
        let mut e = Endpoints::default();
        for (id, sim) in &self.modbus {
            e.devices.insert(id.clone(), sim.local_addr().to_string());
        }
        for (id, sim) in &self.scanners {
            if let Ok(s) = sim.lock() {
                e.scanners
                    .insert(id.clone(), s.path().to_string_lossy().into_owned());
            }
        }
        e
    }

    /// The links created at the gateway configs' scanner paths.
    pub fn links(&self) -> &[PathBuf] {
        &self.links
    }

    /// The register bank of a Modbus device (to set values outside the plant model).
    pub fn bank(&self, device: &str) -> Option<&SimBank> {
        self.modbus.get(device).map(TcpSim::bank)
    }

    /// Stops every device (PLCs switched off, scanners unplugged).
    pub async fn stop(&mut self) {
        for sim in self.modbus.values_mut() {
            sim.stop().await;
        }
        for s in self.scanners.values() {
            if let Ok(mut s) = s.lock() {
                s.unplug();
            }
        }
    }
}

impl Drop for SimPlant {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = std::fs::remove_file(l);
        }
    }
}

impl Floor for SimPlant {
    fn scan(&self, scanner: &str, code: &str) -> Result<(), FloorError> {
        let s = self
            .scanners
            .get(scanner)
            .ok_or_else(|| FloorError::UnknownScanner(scanner.to_owned()))?;
        let mut s = s
            .lock()
            .map_err(|_| FloorError::Io(format!("scanner {scanner}: lock poisoned")))?;
        s.scan(code)
            .map_err(|e| FloorError::Io(format!("scanner {scanner}: {e}")))
    }

    fn set_tag(&self, device: &str, tag: &str, value: &SimValue) -> Result<(), FloorError> {
        let write = self.tags.encode(device, tag, value)?;
        let bank = self
            .bank(device)
            .ok_or_else(|| FloorError::UnknownDevice(device.to_owned()))?;
        match write {
            RegisterWrite::Bit {
                area: Area::Discrete,
                address,
                value,
            } => bank.set_discrete(address, value),
            RegisterWrite::Bit { address, value, .. } => bank.set_coil(address, value),
            RegisterWrite::Words {
                area: Area::Input,
                address,
                words,
            } => bank.set_input(address, &words),
            RegisterWrite::Words { address, words, .. } => bank.set_holding(address, &words),
        }
        Ok(())
    }
}
