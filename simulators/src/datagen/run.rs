//! [`generate`]: the plant of a [`Plan`] into a database, from the first item to the rebuilt
//! indexes.

use std::collections::HashMap;

use anyhow::Context as _;

use super::layout::{LEVELS, Layout};
use super::master;
use super::products::Products;
use super::rows::Table;
use super::sink::Sink;
use super::target::Target;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Unit items in total (all levels); rounded down to a multiple of 5.
    pub units: u64,
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Default, Clone)]
pub struct Written {
    /// Rows per table.
    pub rows: HashMap<&'static str, u64>,
    pub products: u64,
}

/// Generates the plant into `url` (postgres://… or sqlite://…), which must hold no plant data.
pub async fn generate(url: &str, plan: &Plan) -> anyhow::Result<Written> {
    let products = plan.units / LEVELS;
    let target = Target::open(url).await?;
    target.ensure_empty().await?;
    let layout = Layout::new(products)?;
    let prepared = target.prepare(&layout).await?;

    let mut sink = Sink::new(&target);
    master::write(&mut sink, &layout).await?;
    let mut writer = Products::new(&layout, plan.seed);
    for p in 0..products {
        writer.write(&mut sink, p).await?;
        if p % 100_000 == 99_999 {
            tracing::info!(products = p + 1, "generated");
        }
    }
    let rows = sink.finish().await?;

    target.finish(prepared).await?;
    // The factor index of common-cause analysis, as the aggregator's index loop would build it
    // over its first rounds (the bulk load bypassed the triggers: the index was empty).
    let db = threadline_aggregator::store::Db::connect(url, 4)
        .await
        .context("connecting for the factor index")?;
    let began = std::time::Instant::now();
    let built = threadline_aggregator::analytics::factor_index::build_all(
        &db,
        threadline_shared::time::now(),
        |p| tracing::info!(hours = p.built, "factor index"),
    )
    .await
    .context("building the factor index")?;
    tracing::info!(
        hours = built.built,
        seconds = began.elapsed().as_secs_f64(),
        "factor index built"
    );
    Ok(Written {
        rows: Table::ALL.iter().map(|t| t.name()).zip(rows).collect(),
        products,
    })
}
