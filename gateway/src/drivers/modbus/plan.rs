//! The request planner: which reads poll which tags.
//!
//! Tags are grouped by (area, scan period), sorted by address, and merged into one read while the
//! hole between them is at most `max_gap` registers (bits for coils / discrete inputs) and the read
//! stays within `max_registers_per_read` (≤ 125 registers) or 2000 bits. A multi-register tag is
//! never split across reads. Pure: same config in, same plan out.

use std::fmt;

use crate::drivers::config::{Area, ByteOrder, DataType, DeviceConfig};
use crate::drivers::modbus::decode::Decoder;

/// Protocol limit for one read of registers (function codes 3 / 4).
pub const MAX_REGISTERS: u16 = 125;
/// Protocol limit for one read of bits (function codes 1 / 2).
pub const MAX_BITS: u16 = 2000;

/// One tag inside a read.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTag {
    /// Index into [`DevicePlan::tags`].
    pub tag: usize,
    /// Registers (bits) from the read's start.
    pub offset: u16,
}

/// One request per scan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRead {
    pub area: Area,
    pub start: u16,
    /// Registers or bits.
    pub count: u16,
    pub tags: Vec<PlannedTag>,
}

impl PlannedRead {
    /// Builds a read covering exactly `tags` (sorted by address), e.g. one half of a split read.
    pub fn covering(area: Area, tags: &[TagSpec], members: &[usize]) -> Option<PlannedRead> {
        let start = members.iter().map(|&i| tags[i].address).min()?;
        let end = members.iter().map(|&i| tags[i].end()).max()?;
        let count = u16::try_from(end - u32::from(start)).ok()?;
        Some(PlannedRead {
            area,
            start,
            count,
            tags: members
                .iter()
                .map(|&i| PlannedTag {
                    tag: i,
                    offset: tags[i].address - start,
                })
                .collect(),
        })
    }
}

/// The reads of one (area, scan period).
#[derive(Debug, Clone, PartialEq)]
pub struct ScanGroup {
    pub area: Area,
    pub scan_ms: u64,
    pub reads: Vec<PlannedRead>,
}

/// What the driver needs to know about a tag.
#[derive(Debug, Clone, PartialEq)]
pub struct TagSpec {
    pub name: String,
    pub area: Area,
    pub address: u16,
    pub decoder: Decoder,
}

impl TagSpec {
    /// First address after the tag (u32: a tag may end exactly at 65536).
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.decoder.width())
    }
}

/// The plan of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePlan {
    pub device: String,
    pub tags: Vec<TagSpec>,
    pub groups: Vec<ScanGroup>,
}

/// A tag the planner cannot place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("tag {tag:?}: missing {field}")]
    Missing { tag: String, field: &'static str },
    #[error(
        "tag {tag:?}: {width} registers do not fit in one read (max_registers_per_read = {limit})"
    )]
    TooWide { tag: String, width: u16, limit: u16 },
    #[error("tag {tag:?}: address {address} + {width} registers runs past 65535")]
    PastEnd {
        tag: String,
        address: u16,
        width: u16,
    },
    #[error("tag {tag:?}: coils and discrete inputs are single bits, type must be bool")]
    BitNotBool { tag: String },
}

/// Plans every Modbus tag of a device. All problems are reported, not only the first.
pub fn plan_device(cfg: &DeviceConfig) -> Result<DevicePlan, Vec<PlanError>> {
    let mut errors = Vec::new();
    let mut tags = Vec::new();
    let mut scan = Vec::new();
    for t in &cfg.tag {
        let (Some(area), Some(address)) = (t.area, t.address) else {
            errors.push(PlanError::Missing {
                tag: t.name.clone(),
                field: if t.area.is_none() { "area" } else { "address" },
            });
            continue;
        };
        let bit_area = matches!(area, Area::Coil | Area::Discrete);
        let ty = t.data_type.unwrap_or(if bit_area {
            DataType::Bool
        } else {
            DataType::U16
        });
        if bit_area && ty != DataType::Bool {
            errors.push(PlanError::BitNotBool {
                tag: t.name.clone(),
            });
            continue;
        }
        let decoder = Decoder {
            ty,
            order: t.order,
            length: t.length.unwrap_or(1).max(1),
            scale: t.scale,
            offset: t.offset,
        };
        let spec = TagSpec {
            name: t.name.clone(),
            area,
            address,
            decoder,
        };
        let width = decoder.width();
        if spec.end() > 65536 {
            errors.push(PlanError::PastEnd {
                tag: t.name.clone(),
                address,
                width,
            });
            continue;
        }
        let limit = limit(area, cfg.max_registers_per_read);
        if width > limit {
            errors.push(PlanError::TooWide {
                tag: t.name.clone(),
                width,
                limit,
            });
            continue;
        }
        tags.push(spec);
        scan.push(t.scan_ms.max(1));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let groups = plan_groups(&tags, &scan, cfg.max_gap, cfg.max_registers_per_read);
    Ok(DevicePlan {
        device: cfg.id.clone(),
        tags,
        groups,
    })
}

/// Largest read of an area.
fn limit(area: Area, max_registers_per_read: u16) -> u16 {
    match area {
        Area::Coil | Area::Discrete => MAX_BITS,
        Area::Input | Area::Holding => max_registers_per_read.clamp(1, MAX_REGISTERS),
    }
}

/// Groups by (area, scan period), then merges each group's tags into reads.
fn plan_groups(
    tags: &[TagSpec],
    scan_ms: &[u64],
    max_gap: u16,
    max_registers: u16,
) -> Vec<ScanGroup> {
    let mut keys: Vec<(Area, u64)> = tags
        .iter()
        .zip(scan_ms)
        .map(|(t, &s)| (t.area, s))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|(area, period)| {
            let mut members: Vec<usize> = (0..tags.len())
                .filter(|&i| tags[i].area == area && scan_ms[i] == period)
                .collect();
            // By address, then the wider tag first so the read end grows monotonically.
            members.sort_by_key(|&i| (tags[i].address, std::cmp::Reverse(tags[i].end())));
            let limit = u32::from(limit(area, max_registers));
            let mut reads = Vec::new();
            let mut current: Vec<usize> = Vec::new();
            let (mut start, mut end) = (0u32, 0u32);
            for i in members {
                let (a, e) = (u32::from(tags[i].address), tags[i].end());
                let fits = !current.is_empty()
                    && a <= end + u32::from(max_gap)
                    && e.max(end) - start <= limit;
                if fits {
                    end = end.max(e);
                    current.push(i);
                } else {
                    if let Some(r) = PlannedRead::covering(area, tags, &current) {
                        reads.push(r);
                    }
                    current = vec![i];
                    (start, end) = (a, e);
                }
            }
            if let Some(r) = PlannedRead::covering(area, tags, &current) {
                reads.push(r);
            }
            ScanGroup {
                area,
                scan_ms: period,
                reads,
            }
        })
        .collect()
}

fn area_name(area: Area) -> &'static str {
    match area {
        Area::Coil => "coil",
        Area::Discrete => "discrete",
        Area::Input => "input",
        Area::Holding => "holding",
    }
}

fn type_name(ty: DataType) -> &'static str {
    match ty {
        DataType::Bool => "bool",
        DataType::U16 => "u16",
        DataType::I16 => "i16",
        DataType::U32 => "u32",
        DataType::I32 => "i32",
        DataType::U64 => "u64",
        DataType::I64 => "i64",
        DataType::F32 => "f32",
        DataType::F64 => "f64",
        DataType::String => "string",
    }
}

/// Human-readable plan, as `threadline-gateway check` prints it:
/// `press-plc holding 100..=131 (32 regs) every 100 ms: press.pressure@100 f32 ABCD, …`.
impl fmt::Display for DevicePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut per_second = 0.0;
        let mut requests = 0usize;
        for g in &self.groups {
            for r in &g.reads {
                requests += 1;
                let unit = match r.area {
                    Area::Coil | Area::Discrete => "bits",
                    Area::Input | Area::Holding => "regs",
                };
                let last = u32::from(r.start) + u32::from(r.count) - 1;
                write!(
                    f,
                    "{} {} {}..={} ({} {}) every {} ms:",
                    self.device,
                    area_name(r.area),
                    r.start,
                    last,
                    r.count,
                    unit,
                    g.scan_ms
                )?;
                for (k, pt) in r.tags.iter().enumerate() {
                    let t = &self.tags[pt.tag];
                    let sep = if k == 0 { " " } else { ", " };
                    write!(
                        f,
                        "{sep}{}@{} {}",
                        t.name,
                        t.address,
                        type_name(t.decoder.ty)
                    )?;
                    if t.decoder.width() > 1 && t.decoder.ty != DataType::String {
                        write!(f, " {}", order_name(t.decoder.order))?;
                    }
                    if t.decoder.ty == DataType::String {
                        write!(f, "[{}]", t.decoder.length)?;
                    }
                }
                writeln!(f)?;
            }
            per_second += g.reads.len() as f64 * 1000.0 / g.scan_ms as f64;
        }
        writeln!(
            f,
            "{}: {} tags, {} requests per scan cycle, {:.1} requests/s",
            self.device,
            self.tags.len(),
            requests,
            per_second
        )
    }
}

fn order_name(o: ByteOrder) -> &'static str {
    match o {
        ByteOrder::ABCD => "ABCD",
        ByteOrder::CDAB => "CDAB",
        ByteOrder::BADC => "BADC",
        ByteOrder::DCBA => "DCBA",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::config::{Protocol, TagConfig};

    fn tag(name: &str, area: Area, address: u16, ty: DataType) -> TagConfig {
        TagConfig {
            name: name.into(),
            area: Some(area),
            address: Some(address),
            data_type: Some(ty),
            order: ByteOrder::ABCD,
            length: None,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            scan_ms: 100,
            deadband: 0.0,
            record: true,
            node_id: None,
            sampling_ms: 1000,
            writable: false,
        }
    }

    fn device(tags: Vec<TagConfig>, max_gap: u16, max_regs: u16) -> DeviceConfig {
        DeviceConfig {
            id: "plc".into(),
            protocol: Protocol::ModbusTcp,
            address: Some("127.0.0.1:502".into()),
            unit_id: 1,
            timeout_ms: 1000,
            max_gap,
            max_registers_per_read: max_regs,
            port: None,
            baud: 9600,
            parity: Default::default(),
            data_bits: Default::default(),
            stop_bits: Default::default(),
            endpoint: None,
            security_policy: None,
            security_mode: None,
            username: None,
            password_file: None,
            trust_server_certs: Default::default(),
            tag: tags,
        }
    }

    fn reads(p: &DevicePlan) -> Vec<(Area, u16, u16, Vec<&str>)> {
        p.groups
            .iter()
            .flat_map(|g| g.reads.iter())
            .map(|r| {
                (
                    r.area,
                    r.start,
                    r.count,
                    r.tags.iter().map(|t| p.tags[t.tag].name.as_str()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn merges_across_small_gaps_only() {
        let d = device(
            vec![
                tag("a", Area::Holding, 100, DataType::F32),
                tag("b", Area::Holding, 104, DataType::U16),
                tag("c", Area::Holding, 113, DataType::U16), // gap 8 after b → merged
                tag("d", Area::Holding, 123, DataType::U16), // gap 9 → new read
            ],
            8,
            120,
        );
        let p = plan_device(&d).expect("plan");
        assert_eq!(
            reads(&p),
            vec![
                (Area::Holding, 100, 14, vec!["a", "b", "c"]),
                (Area::Holding, 123, 1, vec!["d"]),
            ]
        );
        let offsets: Vec<u16> = p.groups[0].reads[0].tags.iter().map(|t| t.offset).collect();
        assert_eq!(offsets, vec![0, 4, 13]);
    }

    #[test]
    fn zero_gap_merges_only_adjacent() {
        let d = device(
            vec![
                tag("a", Area::Input, 0, DataType::U32),
                tag("b", Area::Input, 2, DataType::U16),
                tag("c", Area::Input, 4, DataType::U16),
            ],
            0,
            120,
        );
        let p = plan_device(&d).expect("plan");
        assert_eq!(
            reads(&p),
            vec![
                (Area::Input, 0, 3, vec!["a", "b"]),
                (Area::Input, 4, 1, vec!["c"])
            ]
        );
    }

    #[test]
    fn never_exceeds_limit_and_never_splits_a_tag() {
        // 100 f64 tags back to back: 400 registers, limit 10 → reads of 2 tags (8 regs).
        let tags = (0..100)
            .map(|i| tag(&format!("t{i}"), Area::Holding, i * 4, DataType::F64))
            .collect();
        let p = plan_device(&device(tags, 8, 10)).expect("plan");
        let rs = reads(&p);
        assert_eq!(rs.len(), 50);
        for (_, start, count, names) in &rs {
            assert!(*count <= 10);
            assert_eq!(*count, 8);
            assert_eq!(names.len(), 2);
            assert_eq!(start % 8, 0);
        }
        // 125 is the protocol cap even if the config asks for more.
        let tags = (0..300)
            .map(|i| tag(&format!("u{i}"), Area::Holding, i, DataType::U16))
            .collect();
        let p = plan_device(&device(tags, 8, 200)).expect("plan");
        let counts: Vec<u16> = reads(&p).iter().map(|r| r.2).collect();
        assert_eq!(counts, vec![125, 125, 50]);
    }

    #[test]
    fn bits_merge_up_to_2000() {
        let tags = (0..3000)
            .map(|i| tag(&format!("c{i}"), Area::Coil, i, DataType::Bool))
            .collect();
        let p = plan_device(&device(tags, 8, 120)).expect("plan");
        let counts: Vec<u16> = reads(&p).iter().map(|r| r.2).collect();
        assert_eq!(counts, vec![2000, 1000]);
    }

    #[test]
    fn groups_by_area_and_scan_period() {
        let mut slow = tag("slow", Area::Holding, 1, DataType::U16);
        slow.scan_ms = 1000;
        let d = device(
            vec![
                tag("h0", Area::Holding, 0, DataType::U16),
                slow,
                tag("i0", Area::Input, 0, DataType::U16),
                tag("c0", Area::Coil, 0, DataType::Bool),
                tag("d0", Area::Discrete, 0, DataType::Bool),
                tag("h2", Area::Holding, 2, DataType::U16),
            ],
            8,
            120,
        );
        let p = plan_device(&d).expect("plan");
        let g: Vec<(Area, u64, usize)> = p
            .groups
            .iter()
            .map(|g| (g.area, g.scan_ms, g.reads.len()))
            .collect();
        assert_eq!(
            g,
            vec![
                (Area::Coil, 100, 1),
                (Area::Discrete, 100, 1),
                (Area::Input, 100, 1),
                (Area::Holding, 100, 1),
                (Area::Holding, 1000, 1),
            ]
        );
        assert_eq!(
            reads(&p)[3],
            (Area::Holding, 0, 3, vec!["h0", "h2"]),
            "slow tag is not in the fast read"
        );
    }

    #[test]
    fn overlapping_and_unsorted_tags() {
        let mut s = tag("s", Area::Holding, 10, DataType::String);
        s.length = Some(10);
        let d = device(
            vec![
                tag("inside", Area::Holding, 12, DataType::U16),
                s,
                tag("low", Area::Holding, 0, DataType::U32),
                tag("same", Area::Holding, 0, DataType::U16),
            ],
            8,
            120,
        );
        let p = plan_device(&d).expect("plan");
        assert_eq!(
            reads(&p),
            vec![(Area::Holding, 0, 20, vec!["low", "same", "s", "inside"])]
        );
    }

    #[test]
    fn bad_tags_are_all_reported() {
        let mut wide = tag("wide", Area::Holding, 0, DataType::String);
        wide.length = Some(50);
        let mut no_addr = tag("no_addr", Area::Holding, 0, DataType::U16);
        no_addr.address = None;
        let d = device(
            vec![
                wide,
                tag("end", Area::Holding, 65535, DataType::U32),
                tag("ok", Area::Holding, 65535, DataType::U16),
                tag("coil_f32", Area::Coil, 0, DataType::F32),
                no_addr,
            ],
            8,
            20,
        );
        let errs = plan_device(&d).expect_err("must fail");
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].to_string().contains("50 registers do not fit"));
        assert!(errs[1].to_string().contains("past 65535"));
    }

    #[test]
    fn display_names_reads_and_totals() {
        let d = device(
            vec![
                tag("press.pressure", Area::Holding, 100, DataType::F32),
                tag("press.count", Area::Holding, 130, DataType::U16),
            ],
            30,
            120,
        );
        let text = plan_device(&d).expect("plan").to_string();
        assert!(
            text.contains(
                "plc holding 100..=130 (31 regs) every 100 ms: press.pressure@100 f32 ABCD, press.count@130 u16"
            ),
            "{text}"
        );
        assert!(
            text.contains("2 tags, 1 requests per scan cycle, 10.0 requests/s"),
            "{text}"
        );
    }
}
