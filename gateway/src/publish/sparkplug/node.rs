//! The Sparkplug edge node as a pure state machine: metric definitions and aliases, the
//! latest value of every metric, `seq` (0–255, wrapping) and the payloads of NBIRTH / DBIRTH /
//! NDATA / DDATA / DDEATH / NDEATH. No I/O here; [`super::client`] moves the bytes.

use std::collections::HashMap;

use prost::Message as _;
use threadline_shared::event::{Quality, Reading, TagValue};

use super::proto::{
    DataType, Metric, MetricValue, Payload, PropertySet, PropertyValue, PropertyValueKind,
};
use crate::config::{Area, DataType as TagType, GatewayConfig, Protocol, TagConfig};

/// The node control metric a host writes `true` to for a rebirth.
pub const REBIRTH_METRIC: &str = "Node Control/Rebirth";
/// The birth/death sequence metric.
pub const BDSEQ_METRIC: &str = "bdSeq";
/// Alias of `Node Control/Rebirth`; device metrics are numbered from 1.
pub const REBIRTH_ALIAS: u64 = 0;
/// The metric property carrying the OPC quality code (Ignition's convention).
pub const QUALITY_PROPERTY: &str = "Quality";

/// OPC DA quality codes as Sparkplug hosts (Ignition) read the `Quality` property.
pub fn quality_code(q: Quality) -> u32 {
    match q {
        Quality::Good => 192,
        Quality::Uncertain => 64,
        Quality::Bad => 0,
    }
}

/// One message to publish: topic and encoded payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
struct MetricDef {
    name: String,
    alias: u64,
    /// `None` until the first value of a tag whose type the config does not give (OPC UA).
    datatype: Option<DataType>,
    value: Option<TagValue>,
    quality: Quality,
    /// Whether any update was seen since the start.
    seen: bool,
    ts_ms: u64,
    /// In its device's `pending` (changed since the last flush).
    pending: bool,
    /// The quality changed since it was last published (DDATA then carries the property).
    quality_changed: bool,
}

#[derive(Debug, Clone)]
struct Device {
    id: String,
    metrics: Vec<MetricDef>,
    /// A DBIRTH was published and no DDEATH since.
    alive: bool,
    /// Metric indexes changed since the last flush.
    pending: Vec<usize>,
    /// Values kept while the primary host is offline, published as historical later.
    historical: Vec<Metric>,
}

impl Device {
    /// Forgets what changed since the last flush (a birth or death publishes the state).
    fn clear_pending(&mut self) {
        for mi in self.pending.drain(..) {
            self.metrics[mi].pending = false;
        }
    }

    /// Dead: every metric has been seen and all are bad (the PLC is unreachable).
    fn all_bad(&self) -> bool {
        !self.metrics.is_empty()
            && self
                .metrics
                .iter()
                .all(|m| m.seen && m.quality == Quality::Bad)
    }
}

/// The Sparkplug datatype of a configured tag, when the config fixes it: the register type,
/// `Double` when `scale`/`offset` make it a float; `None` for OPC UA tags without `type`
/// (the first value decides).
pub fn tag_datatype(protocol: Protocol, t: &TagConfig) -> Option<DataType> {
    let ty = match (t.data_type, protocol) {
        (Some(ty), _) => ty,
        (None, Protocol::OpcUa) => return None,
        (None, _) => match t.area {
            Some(Area::Coil | Area::Discrete) => TagType::Bool,
            _ => TagType::U16,
        },
    };
    let scaled = t.scale != 1.0 || t.offset != 0.0;
    Some(match ty {
        TagType::Bool => DataType::Boolean,
        TagType::String => DataType::String,
        TagType::F32 if !scaled => DataType::Float,
        _ if scaled => DataType::Double,
        TagType::U16 => DataType::UInt16,
        TagType::I16 => DataType::Int16,
        TagType::U32 => DataType::UInt32,
        TagType::I32 => DataType::Int32,
        TagType::U64 => DataType::UInt64,
        TagType::I64 => DataType::Int64,
        TagType::F32 | TagType::F64 => DataType::Double,
    })
}

/// The datatype a value of unknown type gets.
fn inferred(v: &TagValue) -> DataType {
    match v {
        TagValue::Bool(_) => DataType::Boolean,
        TagValue::Int(_) => DataType::Int64,
        TagValue::UInt(_) => DataType::UInt64,
        TagValue::Float(_) => DataType::Double,
        TagValue::Text(_) => DataType::String,
    }
}

/// `v` in the protobuf field of `dt` (two's complement for signed integers, as the spec says);
/// `None` when it cannot be (a text value for a numeric metric).
pub fn encode_value(dt: DataType, v: &TagValue) -> Option<MetricValue> {
    let as_i64 = || match v {
        TagValue::Int(i) => Some(*i),
        TagValue::UInt(u) => i64::try_from(*u).ok(),
        TagValue::Bool(b) => Some(i64::from(*b)),
        TagValue::Float(f) if f.is_finite() => Some(*f as i64),
        _ => None,
    };
    let as_u64 = || match v {
        TagValue::UInt(u) => Some(*u),
        TagValue::Int(i) => u64::try_from(*i).ok(),
        TagValue::Bool(b) => Some(u64::from(*b)),
        TagValue::Float(f) if f.is_finite() && *f >= 0.0 => Some(*f as u64),
        _ => None,
    };
    Some(match dt {
        DataType::Boolean => MetricValue::BooleanValue(match v {
            TagValue::Bool(b) => *b,
            _ => v.as_f64()? != 0.0,
        }),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => {
            MetricValue::IntValue(as_i64()? as i32 as u32)
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => {
            MetricValue::IntValue(u32::try_from(as_u64()?).ok()?)
        }
        DataType::Int64 => MetricValue::LongValue(as_i64()? as u64),
        DataType::UInt64 => MetricValue::LongValue(as_u64()?),
        DataType::Float => MetricValue::FloatValue(v.as_f64()? as f32),
        DataType::Double => MetricValue::DoubleValue(v.as_f64()?),
        DataType::String => MetricValue::StringValue(match v {
            TagValue::Text(s) => s.clone(),
            TagValue::Bool(b) => b.to_string(),
            TagValue::Int(i) => i.to_string(),
            TagValue::UInt(u) => u.to_string(),
            TagValue::Float(f) => f.to_string(),
        }),
    })
}

fn quality_props(q: Quality) -> PropertySet {
    PropertySet {
        keys: vec![QUALITY_PROPERTY.into()],
        values: vec![PropertyValue {
            r#type: Some(DataType::Int32.code()),
            is_null: None,
            value: Some(PropertyValueKind::IntValue(quality_code(q))),
        }],
    }
}

/// The Sparkplug edge node of one gateway.
#[derive(Debug)]
pub struct EdgeNode {
    group: String,
    edge: String,
    /// The `seq` of the next message (0–255).
    seq: u8,
    devices: Vec<Device>,
    by_tag: HashMap<String, (usize, usize)>,
    /// A metric's datatype became known after the births: a rebirth is due.
    rebirth_due: bool,
    /// Historical metrics held, in all devices.
    historical_len: usize,
    historical_max: usize,
    /// Historical metrics given up because the buffer was full (oldest kept).
    pub historical_dropped: u64,
}

impl EdgeNode {
    /// One Sparkplug device per Threadline device with recorded tags, each recorded tag a
    /// metric; aliases numbered from 1 in config order, unique in the node.
    pub fn new(cfg: &GatewayConfig, group: &str, edge: &str, historical_max: usize) -> EdgeNode {
        let mut devices = Vec::new();
        let mut by_tag = HashMap::new();
        let mut alias = REBIRTH_ALIAS + 1;
        for d in &cfg.device {
            let metrics: Vec<MetricDef> = d
                .tag
                .iter()
                .filter(|t| t.record)
                .map(|t| {
                    let m = MetricDef {
                        name: t.name.clone(),
                        alias,
                        datatype: tag_datatype(d.protocol, t),
                        value: None,
                        quality: Quality::Good,
                        seen: false,
                        ts_ms: 0,
                        pending: false,
                        quality_changed: false,
                    };
                    alias += 1;
                    m
                })
                .collect();
            if metrics.is_empty() {
                continue;
            }
            for (i, m) in metrics.iter().enumerate() {
                by_tag.insert(m.name.clone(), (devices.len(), i));
            }
            devices.push(Device {
                id: d.id.clone(),
                metrics,
                alive: false,
                pending: Vec::new(),
                historical: Vec::new(),
            });
        }
        EdgeNode {
            group: group.to_owned(),
            edge: edge.to_owned(),
            seq: 0,
            devices,
            by_tag,
            rebirth_due: false,
            historical_len: 0,
            historical_max,
            historical_dropped: 0,
        }
    }

    /// `spBv1.0/{group}/{kind}/{edge}[/{device}]`.
    pub fn topic(&self, kind: &str, device: Option<&str>) -> String {
        match device {
            Some(d) => format!("spBv1.0/{}/{kind}/{}/{d}", self.group, self.edge),
            None => format!("spBv1.0/{}/{kind}/{}", self.group, self.edge),
        }
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        u64::from(s)
    }

    /// The NDEATH payload (the MQTT will): the `bdSeq` of the session, no `seq`.
    pub fn ndeath(&self, bd_seq: u8, now_ms: u64) -> Outgoing {
        let payload = Payload {
            timestamp: Some(now_ms),
            metrics: vec![bdseq_metric(bd_seq, now_ms)],
            ..Default::default()
        };
        Outgoing {
            topic: self.topic("NDEATH", None),
            payload: payload.encode_to_vec(),
        }
    }

    /// NBIRTH (`seq` 0, `bdSeq`, `Node Control/Rebirth`) and a DBIRTH for every device not
    /// dead, each metric with name, alias, datatype and current value (or `is_null`).
    pub fn births(&mut self, bd_seq: u8, now_ms: u64) -> Vec<Outgoing> {
        self.seq = 0;
        self.rebirth_due = false;
        let mut out = Vec::with_capacity(1 + self.devices.len());
        let nbirth = Payload {
            timestamp: Some(now_ms),
            seq: Some(self.next_seq()),
            metrics: vec![
                bdseq_metric(bd_seq, now_ms),
                Metric {
                    name: Some(REBIRTH_METRIC.into()),
                    alias: Some(REBIRTH_ALIAS),
                    timestamp: Some(now_ms),
                    datatype: Some(DataType::Boolean.code()),
                    value: Some(MetricValue::BooleanValue(false)),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        out.push(Outgoing {
            topic: self.topic("NBIRTH", None),
            payload: nbirth.encode_to_vec(),
        });
        for i in 0..self.devices.len() {
            self.devices[i].clear_pending();
            if self.devices[i].all_bad() {
                self.devices[i].alive = false;
                continue;
            }
            out.push(self.dbirth(i, now_ms));
        }
        out
    }

    fn dbirth(&mut self, i: usize, now_ms: u64) -> Outgoing {
        let seq = self.next_seq();
        let topic = self.topic("DBIRTH", Some(&self.devices[i].id));
        let d = &mut self.devices[i];
        d.alive = true;
        d.clear_pending();
        let metrics = d
            .metrics
            .iter_mut()
            .map(|m| {
                m.quality_changed = false;
                let mut metric = value_metric(m, false);
                metric.name = Some(m.name.clone());
                metric.datatype = Some(m.datatype.unwrap_or(DataType::Double).code());
                if !m.seen {
                    metric.timestamp = Some(now_ms);
                }
                metric.properties = Some(quality_props(m.quality));
                metric
            })
            .collect();
        let payload = Payload {
            timestamp: Some(now_ms),
            seq: Some(seq),
            metrics,
            ..Default::default()
        };
        Outgoing {
            topic,
            payload: payload.encode_to_vec(),
        }
    }

    /// Applies a recorded reading. `hold` (the primary host is offline): the value is also
    /// kept for a historical DDATA later. Unknown tags are ignored.
    pub fn update(&mut self, r: &Reading, ts_ms: u64, hold: bool) {
        let Some(&(di, mi)) = self.by_tag.get(&r.tag) else {
            return;
        };
        let d = &mut self.devices[di];
        let m = &mut d.metrics[mi];
        if m.datatype.is_none()
            && let Some(v) = &r.value
        {
            m.datatype = Some(inferred(v));
            self.rebirth_due = true;
        }
        let quality_changed = m.quality != r.quality;
        m.quality_changed |= quality_changed;
        m.value = r.value.clone();
        m.quality = r.quality;
        m.seen = true;
        m.ts_ms = ts_ms;
        if hold {
            let mut metric = value_metric(m, quality_changed || m.quality != Quality::Good);
            metric.is_historical = Some(true);
            d.historical.push(metric);
            self.historical_len += 1;
            if self.historical_len > self.historical_max {
                self.drop_oldest_historical();
            }
        } else if !m.pending {
            m.pending = true;
            d.pending.push(mi);
        }
    }

    fn drop_oldest_historical(&mut self) {
        if let Some(d) = self
            .devices
            .iter_mut()
            .filter(|d| !d.historical.is_empty())
            .min_by_key(|d| d.historical[0].timestamp)
        {
            d.historical.remove(0);
            self.historical_len -= 1;
            self.historical_dropped += 1;
        }
    }

    /// Whether a rebirth is due (a datatype became known).
    pub fn rebirth_due(&self) -> bool {
        self.rebirth_due
    }

    /// The messages for what changed since the last flush: one DDATA per device with every
    /// changed metric (by alias), a DDEATH for a device whose metrics all went bad, a DBIRTH
    /// for a dead device that has a good value again.
    pub fn flush(&mut self, now_ms: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for i in 0..self.devices.len() {
            if self.devices[i].pending.is_empty() {
                continue;
            }
            let (alive, all_bad) = (self.devices[i].alive, self.devices[i].all_bad());
            if alive && all_bad {
                let seq = self.next_seq();
                let d = &mut self.devices[i];
                d.alive = false;
                d.clear_pending();
                let payload = Payload {
                    timestamp: Some(now_ms),
                    seq: Some(seq),
                    ..Default::default()
                };
                out.push(Outgoing {
                    topic: self.topic("DDEATH", Some(&self.devices[i].id)),
                    payload: payload.encode_to_vec(),
                });
                continue;
            }
            if !alive {
                if !all_bad {
                    out.push(self.dbirth(i, now_ms));
                } else {
                    self.devices[i].clear_pending();
                }
                continue;
            }
            let seq = self.next_seq();
            let topic = self.topic("DDATA", Some(&self.devices[i].id));
            let d = &mut self.devices[i];
            let metrics = d
                .pending
                .drain(..)
                .map(|mi| {
                    let m = &mut d.metrics[mi];
                    m.pending = false;
                    // The quality property only when it says something: not good, or changed.
                    let with_quality = m.quality_changed || m.quality != Quality::Good;
                    m.quality_changed = false;
                    value_metric(m, with_quality)
                })
                .collect();
            let payload = Payload {
                timestamp: Some(now_ms),
                seq: Some(seq),
                metrics,
                ..Default::default()
            };
            out.push(Outgoing {
                topic,
                payload: payload.encode_to_vec(),
            });
        }
        out
    }

    /// The held values as historical DDATA (`is_historical = true`, their own timestamps), at
    /// most `chunk` metrics a message; publish after the births.
    pub fn historical(&mut self, now_ms: u64, chunk: usize) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for i in 0..self.devices.len() {
            let held = std::mem::take(&mut self.devices[i].historical);
            self.historical_len -= held.len();
            if !self.devices[i].alive {
                continue;
            }
            for part in held.chunks(chunk.max(1)) {
                let payload = Payload {
                    timestamp: Some(now_ms),
                    seq: Some(self.next_seq()),
                    metrics: part.to_vec(),
                    ..Default::default()
                };
                out.push(Outgoing {
                    topic: self.topic("DDATA", Some(&self.devices[i].id)),
                    payload: payload.encode_to_vec(),
                });
            }
        }
        out
    }

    /// Number of devices and metrics (for the log line at start).
    pub fn size(&self) -> (usize, usize) {
        (
            self.devices.len(),
            self.devices.iter().map(|d| d.metrics.len()).sum(),
        )
    }
}

fn bdseq_metric(bd_seq: u8, now_ms: u64) -> Metric {
    Metric {
        name: Some(BDSEQ_METRIC.into()),
        timestamp: Some(now_ms),
        datatype: Some(DataType::Int64.code()),
        value: Some(MetricValue::LongValue(u64::from(bd_seq))),
        ..Default::default()
    }
}

/// A data metric: alias, timestamp, value (or `is_null`), and the `Quality` property when
/// `with_quality` and the quality is not good or changed.
fn value_metric(m: &MetricDef, with_quality: bool) -> Metric {
    let value = match (&m.value, m.datatype) {
        (Some(v), Some(dt)) if m.quality != Quality::Bad => encode_value(dt, v),
        _ => None,
    };
    Metric {
        alias: Some(m.alias),
        timestamp: Some(m.ts_ms),
        is_null: value.is_none().then_some(true),
        properties: with_quality.then(|| quality_props(m.quality)),
        value,
        ..Default::default()
    }
}

/// Decodes an NCMD: whether it asks for a rebirth (`Node Control/Rebirth` by name or alias,
/// `true`).
pub fn is_rebirth_request(payload: &[u8]) -> Result<bool, prost::DecodeError> {
    let p = Payload::decode(payload)?;
    Ok(p.metrics.iter().any(|m| {
        (m.name.as_deref() == Some(REBIRTH_METRIC) || m.alias == Some(REBIRTH_ALIAS))
            && m.value == Some(MetricValue::BooleanValue(true))
    }))
}
