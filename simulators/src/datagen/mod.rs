//! Benchmark data generator: writes a realistic plant history straight into the aggregator's
//! database (bypassing ingest), fast enough for 10 M units.
//!
//! The plant: every product is a 5-level BOM chain — a finished unit (`SN…`, level 1) assembled
//! from a level-2 sub-assembly, assembled from level 3, … down to level 5. So `units` unit items
//! are `units / 5` products. Every unit consumes one lot of its level's part (lots of 2 000);
//! level-5 units also consume a fastener lot shared by 20 000 products, so fastener lot
//! `FAST-000000` reaches 100 000 units through all five levels. Finished units are packed 20 to
//! a case, cases 40 to a pallet, pallets shipped two per shipment to one of 300 customers. Each
//! finished unit has 3 operations, each sub-assembly 1, each with 10 parameters (~1 % out of
//! spec) and 2 environment values; each finished unit has a quality check. Every 1 000th product
//! was first packed into a case and unpacked again (a closed edge). Readings: one press
//! pressure per finished unit.
//!
//! Causes to find, as in the demo plant: the middle lot of level 3 (`LOT-L3-{part_lots/2}`,
//! supplier batch `SB-{part_lots/2}`) is bad — its products fail the ST30 leak test (level 1)
//! ~30 % of the time, against ~2 % elsewhere; and PRESS-1 at ST10 drifts for 5 000 products from
//! the middle one (pressure up by up to two sixths of the tolerance, inside the limits).
//! Datagen's lots of every level change at the same products, so the other levels' lots of the
//! same number share the bad lot's units exactly: common-cause ranks them tied with it.
//!
//! PostgreSQL: `COPY … FROM STDIN` in 4 MB batches, loaded by a second task while this one
//! generates (both cores work), without foreign-key triggers (`session_replication_role =
//! replica`: the data is consistent by construction), with secondary indexes dropped during the
//! load and rebuilt after (then VACUUM ANALYZE); readings' day partitions are made first.
//! SQLite: multi-row INSERTs in large transactions. The target database must be empty; the
//! schema is created with the aggregator's migrations.
//!
//! - `run`: [`generate`], the whole load in order;
//! - `layout`: counts, ids and times of the plant (ids are assigned, never looked up);
//! - `master`: lots, containers and shipments; `products`: each product's units, operations,
//!   checks, readings and edges;
//! - `rows`: one typed row per table; `sink`: buffering, encoding and flushing them;
//! - `target`: connecting, migrating, and what is done before and after the bulk load.

mod layout;
mod master;
mod products;
mod rows;
mod run;
mod sink;
mod target;

pub use layout::{
    BAD_LEVEL, CASE_SIZE, CUSTOMERS, DRIFT_PRODUCTS, FASTENER_LOT_PRODUCTS, LEVELS, LOT_SIZE,
    Layout, PALLET_SIZE,
};
pub use run::{Plan, Written, generate};
