//! Master data written before the first product: part lots, fastener lots, cases, pallets,
//! shipments and the rework case (all `items` rows).

use chrono::Duration;

use super::layout::{
    CASE_SIZE, CUSTOMERS, FASTENER_LOT_PRODUCTS, LEVELS, LOT_SIZE, Layout, PALLET_SIZE, ts,
};
use super::rows::Item;
use super::sink::Sink;

/// Writes every item that is not a unit.
pub(super) async fn write(sink: &mut Sink, layout: &Layout) -> anyhow::Result<()> {
    part_lots(sink, layout).await?;
    fastener_lots(sink, layout).await?;
    containers(sink, layout).await?;
    shipments(sink, layout).await?;
    sink.push(&Item {
        level: Some("case"),
        ..Item::new(layout.rework_case, "container", "CASE-REWORK")
    })
    .await
}

/// Every level's part lots, each first seen an hour before its first product.
async fn part_lots(sink: &mut Sink, layout: &Layout) -> anyhow::Result<()> {
    for level in 1..=LEVELS {
        let part = format!("P-L{level}");
        for l in 0..layout.part_lots {
            let ext = format!("LOT-L{level}-{l:06}");
            let supplier = format!("SUP-{:03}", (l * 7 + level) % 50);
            let batch = format!("SB-{l}");
            let seen = ts(layout.product_time(l * LOT_SIZE) - Duration::hours(1));
            sink.push(&Item {
                part: Some(&part),
                supplier: Some(&supplier),
                supplier_batch: Some(&batch),
                qty: Some(LOT_SIZE as f64),
                first_seen_at: Some(&seen),
                ..Item::new(layout.lot_id(level, l * LOT_SIZE), "lot", &ext)
            })
            .await?;
        }
    }
    Ok(())
}

/// Fastener lots: 4 screws a product, one lot per `FASTENER_LOT_PRODUCTS` products.
async fn fastener_lots(sink: &mut Sink, layout: &Layout) -> anyhow::Result<()> {
    for f in 0..layout.fastener_lots {
        let ext = format!("FAST-{f:06}");
        let seen = ts(layout.product_time(f * FASTENER_LOT_PRODUCTS) - Duration::hours(1));
        sink.push(&Item {
            part: Some("M4-SCREW"),
            supplier: Some("Fastenal"),
            qty: Some((FASTENER_LOT_PRODUCTS * 4) as f64),
            first_seen_at: Some(&seen),
            ..Item::new(layout.fastener_lot_id(f), "lot", &ext)
        })
        .await?;
    }
    Ok(())
}

async fn containers(sink: &mut Sink, layout: &Layout) -> anyhow::Result<()> {
    for c in 0..layout.cases {
        let ext = format!("CASE-{c:08}");
        sink.push(&Item {
            level: Some("case"),
            ..Item::new(layout.case_id(c), "container", &ext)
        })
        .await?;
    }
    for p in 0..layout.pallets {
        let ext = format!("PAL-{p:07}");
        sink.push(&Item {
            level: Some("pallet"),
            ..Item::new(layout.pallet_id(p), "container", &ext)
        })
        .await?;
    }
    Ok(())
}

/// Two pallets a shipment, shipped 12 h after its last product, to a customer drawn by a
/// multiplicative hash of the shipment number.
async fn shipments(sink: &mut Sink, layout: &Layout) -> anyhow::Result<()> {
    for s in 0..layout.shipments {
        let ext = format!("SHP-{s:07}");
        let customer = format!("CUST-{:03}", (s * 2_654_435_761) % CUSTOMERS);
        let last_product = ((s + 1) * 2 * PALLET_SIZE * CASE_SIZE).min(layout.products) - 1;
        let at = ts(layout.product_time(last_product) + Duration::hours(12));
        sink.push(&Item {
            customer: Some(&customer),
            shipped_at: Some(&at),
            ..Item::new(layout.shipment_id(s), "shipment", &ext)
        })
        .await?;
    }
    Ok(())
}
