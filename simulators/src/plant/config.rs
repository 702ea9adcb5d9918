//! `plant.toml`: the simulated plant of `threadline-sim` (see `config/demo/plant.toml`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use threadline_gateway::config::GatewayConfig;
use threadline_shared::config::{self, ConfigErrors, Validate, Validator};

use super::params::PlantParams;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantFile {
    /// The plant model's knobs.
    #[serde(default)]
    pub plant: PlantParams,
    #[serde(default)]
    pub run: RunSection,
    /// Where each simulated Modbus device listens.
    #[serde(default)]
    pub device: Vec<SimDeviceConfig>,
}

/// `[run]`: how long, and where the results go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Finished units to make; 0 = until stopped.
    #[serde(default)]
    pub units: usize,
    /// Finished units planned (and written to the truth) at a time.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The ground truth (JSON), rewritten after every batch; relative to the working directory.
    #[serde(default)]
    pub truth: Option<PathBuf>,
    /// Gateway configs whose `[[device.tag]]` maps the plant writes and whose `[[scanner]]`s it
    /// types into; relative to this file.
    pub gateway_configs: Vec<PathBuf>,
}

fn default_batch() -> usize {
    20
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            units: 0,
            batch: default_batch(),
            truth: None,
            gateway_configs: Vec::new(),
        }
    }
}

/// One `[[device]]`: a simulated Modbus TCP device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimDeviceConfig {
    /// The device id of the gateway configs.
    pub id: String,
    /// `host:port`; port 0 = any free port (reported at start).
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:0".to_owned()
}

impl Validate for PlantFile {
    fn validate(&self, v: &mut Validator<'_>) {
        if self.run.gateway_configs.is_empty() {
            v.error(
                "run.gateway_configs",
                "name at least one gateway config (the tag maps and scanners come from there)",
            );
        }
        if self.run.batch == 0 {
            v.error("run.batch", "must be at least 1");
        }
        for (i, d) in self.device.iter().enumerate() {
            if d.listen.parse::<std::net::SocketAddr>().is_err() {
                v.error(
                    format!("device[{i}].listen"),
                    format!(
                        "{:?} is not a socket address like 127.0.0.1:15020",
                        d.listen
                    ),
                );
            }
        }
        if self.plant.settle_ms == 0 {
            v.error(
                "plant.settle_ms",
                "must be at least 1 (≥ 3 × the gateways' scan_ms)",
            );
        }
        if self.plant.case_size == 0 || self.plant.cases_per_pallet == 0 {
            v.error(
                "plant.case_size",
                "case_size and cases_per_pallet must be at least 1",
            );
        }
    }
}

/// A loaded plant file with its gateway configs.
#[derive(Debug, Clone)]
pub struct LoadedPlant {
    pub file: PlantFile,
    pub gateways: Vec<(PathBuf, GatewayConfig)>,
}

/// Why a plant file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PlantConfigError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{path}: {errors}")]
    Gateway { path: PathBuf, errors: ConfigErrors },
}

impl LoadedPlant {
    /// Loads `plant.toml` and every gateway config it names, reporting every problem.
    pub fn load(path: &Path) -> Result<LoadedPlant, PlantConfigError> {
        let file: PlantFile = config::load(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut gateways = Vec::new();
        for g in &file.run.gateway_configs {
            let p = dir.join(g);
            let cfg = GatewayConfig::load(&p).map_err(|errors| PlantConfigError::Gateway {
                path: p.clone(),
                errors,
            })?;
            gateways.push((p, cfg));
        }
        Ok(LoadedPlant { file, gateways })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn demo_plant_file_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo/plant.toml");
        let l = LoadedPlant::load(&p).unwrap();
        assert_eq!(l.gateways.len(), 2);
        assert_eq!(l.file.device.len(), 3);
    }

    #[test]
    fn mistakes_are_reported_with_place() {
        let e = config::parse::<PlantFile>(
            "plant.toml",
            "[plant]\nsede = 1\n[run]\ngateway_configs = []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("plant.toml:2:1"), "{e}");
        assert!(e.contains("sede"), "{e}");
    }
}
