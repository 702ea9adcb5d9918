//! The shape of a generated plant: how many of each thing, their ids and their times. Ids are
//! assigned here, explicitly and densely, so that edges are written without lookups:
//! units (`products × LEVELS`, level 1 to 5 per product), part lots (level by level), fastener
//! lots, cases, pallets, shipments, and last the rework case.

use chrono::{DateTime, Duration, Utc};

/// Levels of the BOM chain.
pub const LEVELS: u64 = 5;
/// Products per part lot.
pub const LOT_SIZE: u64 = 2_000;
/// Products per fastener lot (each reaches 5 × this many units).
pub const FASTENER_LOT_PRODUCTS: u64 = 20_000;
/// Finished units per case.
pub const CASE_SIZE: u64 = 20;
/// Cases per pallet.
pub const PALLET_SIZE: u64 = 40;
/// Customers the shipments go to.
pub const CUSTOMERS: u64 = 300;
/// The BOM level of the injected bad lot.
pub const BAD_LEVEL: u64 = 3;
/// Products the injected press drift lasts.
pub const DRIFT_PRODUCTS: u64 = 5_000;

/// The floor time of product 0; a product leaves the line every 6 s after it.
const START: &str = "2026-01-05T06:00:00Z";
/// Seconds between two products.
const TAKT_S: u64 = 6;

/// Counts and id ranges of a plant of `products` products.
#[derive(Debug, Clone)]
pub struct Layout {
    pub(super) products: u64,
    pub(super) t0: DateTime<Utc>,
    /// Lots of each level's part.
    pub(super) part_lots: u64,
    pub(super) fastener_lots: u64,
    pub(super) cases: u64,
    pub(super) pallets: u64,
    pub(super) shipments: u64,
    lot_base: i64,
    fastener_base: i64,
    case_base: i64,
    pallet_base: i64,
    shipment_base: i64,
    /// The case every 1 000th product is packed into and unpacked from again.
    pub(super) rework_case: i64,
}

impl Layout {
    pub fn new(products: u64) -> anyhow::Result<Layout> {
        let t0 = DateTime::parse_from_rfc3339(START).map(|t| t.with_timezone(&Utc))?;
        let unit_base: i64 = 1;
        let lot_base = unit_base + (products * LEVELS) as i64;
        let part_lots = products.div_ceil(LOT_SIZE);
        let fastener_base = lot_base + (LEVELS * part_lots) as i64;
        let fastener_lots = products.div_ceil(FASTENER_LOT_PRODUCTS);
        let case_base = fastener_base + fastener_lots as i64;
        let cases = products.div_ceil(CASE_SIZE);
        let pallet_base = case_base + cases as i64;
        let pallets = cases.div_ceil(PALLET_SIZE);
        let shipment_base = pallet_base + pallets as i64;
        let shipments = pallets.div_ceil(2);
        let rework_case = shipment_base + shipments as i64;
        Ok(Layout {
            products,
            t0,
            part_lots,
            fastener_lots,
            cases,
            pallets,
            shipments,
            lot_base,
            fastener_base,
            case_base,
            pallet_base,
            shipment_base,
            rework_case,
        })
    }

    /// Injected cause 1: the part lot index of level [`BAD_LEVEL`] that is a bad supplier
    /// batch (the middle one): its products fail the leak test ~30 % of the time.
    pub fn bad_lot(&self) -> u64 {
        self.part_lots / 2
    }

    /// Injected cause 2: the products whose ST10 press (PRESS-1) drifts — from the middle
    /// product on, for [`DRIFT_PRODUCTS`] products.
    pub fn drift_window(&self) -> std::ops::Range<u64> {
        let start = self.products / 2;
        start..(start + DRIFT_PRODUCTS).min(self.products)
    }

    /// The unit of `level` (1 = finished) of product `p`.
    pub(super) fn unit_id(&self, p: u64, level: u64) -> i64 {
        1 + (p * LEVELS + (level - 1)) as i64
    }

    /// The lot of `level`'s part that product `p` consumes.
    pub(super) fn lot_id(&self, level: u64, p: u64) -> i64 {
        self.lot_base + ((level - 1) * self.part_lots + p / LOT_SIZE) as i64
    }

    /// Fastener lot number `f`.
    pub(super) fn fastener_lot_id(&self, f: u64) -> i64 {
        self.fastener_base + f as i64
    }

    /// The fastener lot product `p`'s level-5 unit consumes.
    pub(super) fn fastener_lot_of(&self, p: u64) -> i64 {
        self.fastener_lot_id(p / FASTENER_LOT_PRODUCTS)
    }

    /// Case number `c`.
    pub(super) fn case_id(&self, c: u64) -> i64 {
        self.case_base + c as i64
    }

    /// Pallet number `pl`.
    pub(super) fn pallet_id(&self, pl: u64) -> i64 {
        self.pallet_base + pl as i64
    }

    /// Shipment number `s`.
    pub(super) fn shipment_id(&self, s: u64) -> i64 {
        self.shipment_base + s as i64
    }

    /// When product `p` was finished.
    pub(super) fn product_time(&self, p: u64) -> DateTime<Utc> {
        self.t0 + Duration::seconds((p * TAKT_S) as i64)
    }

    /// The last day that holds generated floor time (the readings partitions end there).
    pub(super) fn last_day(&self) -> DateTime<Utc> {
        self.product_time(self.products) + Duration::days(1)
    }
}

/// A timestamp as the generator writes it: RFC 3339, microseconds, `Z`.
pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn ids_are_dense_and_disjoint() {
        for products in [1, 19, 20, 2_500, 45_001] {
            let l = Layout::new(products).expect("layout");
            let mut ids = BTreeSet::new();
            for p in 0..products {
                for level in 1..=LEVELS {
                    assert!(ids.insert(l.unit_id(p, level)));
                }
            }
            for level in 1..=LEVELS {
                for lot in 0..l.part_lots {
                    assert!(ids.insert(l.lot_id(level, lot * LOT_SIZE)));
                }
            }
            for f in 0..l.fastener_lots {
                assert!(ids.insert(l.fastener_lot_id(f)));
            }
            for c in 0..l.cases {
                assert!(ids.insert(l.case_id(c)));
            }
            for pl in 0..l.pallets {
                assert!(ids.insert(l.pallet_id(pl)));
            }
            for s in 0..l.shipments {
                assert!(ids.insert(l.shipment_id(s)));
            }
            assert!(ids.insert(l.rework_case));
            let n = ids.len() as i64;
            assert_eq!(ids.first(), Some(&1), "{products} products");
            assert_eq!(ids.last(), Some(&n), "{products} products");
            // Every product's references stay inside their ranges.
            let last = products - 1;
            assert!(l.lot_id(LEVELS, last) < l.fastener_lot_id(0));
            assert!(l.fastener_lot_of(last) < l.case_id(0));
        }
    }
}
