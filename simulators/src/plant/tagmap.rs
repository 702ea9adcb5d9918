//! Where each PLC tag lives in a simulated Modbus device, read from the gateway configs so that
//! a tag is defined once: the plant writes exactly the registers the gateway reads.

use std::collections::BTreeMap;

use threadline_gateway::config::{Area, ByteOrder, DataType, GatewayConfig, Protocol};

use super::floor::{FloorError, SimValue};

/// One tag's place and encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct TagSpec {
    pub area: Area,
    pub address: u16,
    pub data_type: DataType,
    pub order: ByteOrder,
    pub scale: f64,
    pub offset: f64,
}

/// What to write into a register bank for one tag value.
#[derive(Debug, Clone, PartialEq)]
pub enum RegisterWrite {
    /// A coil or discrete input.
    Bit {
        area: Area,
        address: u16,
        value: bool,
    },
    /// Holding or input registers starting at `address`.
    Words {
        area: Area,
        address: u16,
        words: Vec<u16>,
    },
}

/// Tags of every Modbus device, by device id then tag name.
#[derive(Debug, Clone, Default)]
pub struct TagMap {
    pub devices: BTreeMap<String, BTreeMap<String, TagSpec>>,
}

impl TagMap {
    /// Collects the Modbus tags of every gateway config (a device read by several gateways,
    /// like a hall sensor, must have the same map in each; the last one wins).
    pub fn from_configs<'a>(cfgs: impl IntoIterator<Item = &'a GatewayConfig>) -> TagMap {
        let mut map = TagMap::default();
        for cfg in cfgs {
            for d in &cfg.device {
                if d.protocol == Protocol::OpcUa {
                    continue;
                }
                let tags = map.devices.entry(d.id.clone()).or_default();
                for t in &d.tag {
                    let (Some(area), Some(address)) = (t.area, t.address) else {
                        continue;
                    };
                    let data_type = t.data_type.unwrap_or(match area {
                        Area::Coil | Area::Discrete => DataType::Bool,
                        Area::Input | Area::Holding => DataType::U16,
                    });
                    tags.insert(
                        t.name.clone(),
                        TagSpec {
                            area,
                            address,
                            data_type,
                            order: t.order,
                            scale: t.scale,
                            offset: t.offset,
                        },
                    );
                }
            }
        }
        map
    }

    /// The register write that makes `device`'s `tag` read as `value`.
    pub fn encode(
        &self,
        device: &str,
        tag: &str,
        value: &SimValue,
    ) -> Result<RegisterWrite, FloorError> {
        let tags = self
            .devices
            .get(device)
            .ok_or_else(|| FloorError::UnknownDevice(device.to_owned()))?;
        let spec = tags.get(tag).ok_or_else(|| FloorError::UnknownTag {
            device: device.to_owned(),
            tag: tag.to_owned(),
        })?;
        Ok(encode(spec, value))
    }
}

/// Encodes a physical value: raw = (value − offset) / scale, then the type's registers in the
/// tag's word / byte order.
pub fn encode(spec: &TagSpec, value: &SimValue) -> RegisterWrite {
    if spec.data_type == DataType::Bool || matches!(spec.area, Area::Coil | Area::Discrete) {
        return RegisterWrite::Bit {
            area: spec.area,
            address: spec.address,
            value: value.as_f64() != 0.0,
        };
    }
    let scale = if spec.scale == 0.0 { 1.0 } else { spec.scale };
    let raw = (value.as_f64() - spec.offset) / scale;
    let bytes: Vec<u8> = match spec.data_type {
        DataType::U16 => (raw.round() as u16).to_be_bytes().to_vec(),
        DataType::I16 => (raw.round() as i16).to_be_bytes().to_vec(),
        DataType::U32 => (raw.round() as u32).to_be_bytes().to_vec(),
        DataType::I32 => (raw.round() as i32).to_be_bytes().to_vec(),
        DataType::U64 => (raw.round() as u64).to_be_bytes().to_vec(),
        DataType::I64 => (raw.round() as i64).to_be_bytes().to_vec(),
        DataType::F32 => (raw as f32).to_be_bytes().to_vec(),
        DataType::F64 => raw.to_be_bytes().to_vec(),
        // Text tags are not driven by the plant; write the number's digits.
        DataType::String | DataType::Bool => {
            let s = format!("{raw}");
            let mut b = s.into_bytes();
            if b.len() % 2 == 1 {
                b.push(0);
            }
            b
        }
    };
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    if words.len() > 1 {
        match spec.order {
            ByteOrder::ABCD => {}
            ByteOrder::CDAB => words.reverse(),
            ByteOrder::BADC => words.iter_mut().for_each(|w| *w = w.swap_bytes()),
            ByteOrder::DCBA => {
                words.reverse();
                words.iter_mut().for_each(|w| *w = w.swap_bytes());
            }
        }
    }
    RegisterWrite::Words {
        area: spec.area,
        address: spec.address,
        words,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(data_type: DataType, order: ByteOrder, scale: f64) -> TagSpec {
        TagSpec {
            area: Area::Holding,
            address: 10,
            data_type,
            order,
            scale,
            offset: 0.0,
        }
    }

    fn words(w: RegisterWrite) -> Vec<u16> {
        match w {
            RegisterWrite::Words { words, .. } => words,
            RegisterWrite::Bit { .. } => panic!("bit"),
        }
    }

    #[test]
    fn f32_in_every_order() {
        // 1.5f32 = 0x3FC00000
        let v = SimValue::Float(1.5);
        assert_eq!(
            words(encode(&spec(DataType::F32, ByteOrder::ABCD, 1.0), &v)),
            [0x3FC0, 0x0000]
        );
        assert_eq!(
            words(encode(&spec(DataType::F32, ByteOrder::CDAB, 1.0), &v)),
            [0x0000, 0x3FC0]
        );
        assert_eq!(
            words(encode(&spec(DataType::F32, ByteOrder::BADC, 1.0), &v)),
            [0xC03F, 0x0000]
        );
        assert_eq!(
            words(encode(&spec(DataType::F32, ByteOrder::DCBA, 1.0), &v)),
            [0x0000, 0xC03F]
        );
    }

    #[test]
    fn scaled_integers_and_bits() {
        assert_eq!(
            words(encode(
                &spec(DataType::I16, ByteOrder::ABCD, 0.1),
                &SimValue::Float(-52.3)
            )),
            [(-523i16) as u16]
        );
        let coil = TagSpec {
            area: Area::Coil,
            ..spec(DataType::Bool, ByteOrder::ABCD, 1.0)
        };
        assert_eq!(
            encode(&coil, &SimValue::Bool(true)),
            RegisterWrite::Bit {
                area: Area::Coil,
                address: 10,
                value: true
            }
        );
    }

    #[test]
    fn demo_configs_define_every_tag_the_plant_sets() {
        use super::super::{Plant, PlantParams};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo");
        let cfgs: Vec<GatewayConfig> = ["line-1.toml", "line-2.toml"]
            .iter()
            .map(|f| GatewayConfig::load(&root.join(f)).unwrap())
            .collect();
        let map = TagMap::from_configs(&cfgs);
        let scanners: std::collections::BTreeSet<&str> = cfgs
            .iter()
            .flat_map(|c| c.scanner.iter().map(|s| s.id.as_str()))
            .collect();
        let mut plant = Plant::new(PlantParams::default());
        let plan = plant.plan_batch(40);
        for a in plan.lanes.iter().flat_map(|l| &l.actions) {
            match a {
                super::super::FloorAction::SetTag { device, tag, value } => {
                    map.encode(device, tag, value).unwrap();
                }
                super::super::FloorAction::Scan { scanner, .. } => {
                    assert!(scanners.contains(scanner.as_str()), "{scanner}");
                }
                super::super::FloorAction::Wait { .. } | super::super::FloorAction::Checkpoint => {}
            }
        }
    }
}
