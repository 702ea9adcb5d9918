//! Running the plant: plan a batch, play it on the floor, write the truth, repeat.

use std::path::{Path, PathBuf};

use super::floor::{Control, Floor, FloorError, Progress, run_lanes};
use super::{Plant, PlantParams, Truth};

/// How long a run goes and where its truth goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Finished units to make; 0 = until cancelled.
    pub units: usize,
    /// Finished units per planned batch.
    pub batch: usize,
    /// The truth file (JSON), rewritten atomically after every completed batch.
    pub truth: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The truth of every completed batch (a batch cut short by cancellation is left out).
    pub truth: Truth,
    pub units_made: usize,
    /// The id base a later run should use so that its ids never collide with this run's.
    pub next_id_base: u64,
    /// True when all `units` were made (false when cancelled first).
    pub complete: bool,
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("floor: {0}")]
    Floor(#[from] FloorError),
    #[error("writing the truth to {path}: {source}")]
    Truth {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Plays the plant batch after batch until `opts.units` are made or `cancel` fires.
/// `on_batch` is called after each completed batch with the truth so far.
pub async fn run_plant<F: Floor + ?Sized>(
    params: PlantParams,
    opts: &RunOptions,
    floor: &F,
    ctl: &Control,
    progress: &dyn Progress,
    on_batch: &mut (dyn FnMut(&Truth, u64) + Send),
) -> Result<RunOutcome, RunError> {
    let mut plant = Plant::new(params);
    let mut made = 0usize;
    let mut done_truth = Truth::default();
    loop {
        if opts.units > 0 && made >= opts.units {
            break;
        }
        let n = if opts.units == 0 {
            opts.batch.max(1)
        } else {
            opts.batch.max(1).min(opts.units - made)
        };
        let plan = plant.plan_batch(n);
        let finished = run_lanes(floor, &plan.lanes, ctl, progress).await?;
        if !finished {
            return Ok(RunOutcome {
                truth: done_truth,
                units_made: made,
                next_id_base: plant.next_id_base(),
                complete: false,
            });
        }
        made += n;
        done_truth = plant.truth().clone();
        if let Some(p) = &opts.truth {
            write_truth(p, &done_truth).map_err(|source| RunError::Truth {
                path: p.clone(),
                source,
            })?;
        }
        on_batch(&done_truth, plant.next_id_base());
    }
    Ok(RunOutcome {
        truth: done_truth,
        units_made: made,
        next_id_base: plant.next_id_base(),
        complete: true,
    })
}

/// Writes the truth as pretty JSON, atomically (temporary file, then rename).
pub fn write_truth(path: &Path, truth: &Truth) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(truth).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::plant::floor::RecordingFloor;

    #[tokio::test]
    async fn runs_batches_and_writes_the_truth() {
        let dir = std::env::temp_dir().join(format!("tl-plant-{}", uuid::Uuid::new_v4()));
        let truth = dir.join("truth.json");
        let floor = RecordingFloor::default();
        let params = PlantParams {
            cycle_ms: 0,
            settle_ms: 1,
            ..PlantParams::default()
        };
        let mut batches = 0;
        let out = run_plant(
            params,
            &RunOptions {
                units: 12,
                batch: 5,
                truth: Some(truth.clone()),
            },
            &floor,
            &Control::default(),
            &(),
            &mut |_, _| batches += 1,
        )
        .await
        .unwrap();
        assert!(out.complete);
        assert_eq!(out.units_made, 12);
        assert_eq!(batches, 3);
        let back: Truth = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
        // (f64 text round trips may differ in the last bit: compare the genealogy itself.)
        assert_eq!(
            back.units.keys().collect::<Vec<_>>(),
            out.truth.units.keys().collect::<Vec<_>>()
        );
        assert_eq!(back.lots, out.truth.lots);
        assert_eq!(back.containers, out.truth.containers);
        assert_eq!(back.finished_units().count(), 12);
        assert!(!floor.log.lock().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn cancel_stops_promptly_and_keeps_only_completed_batches() {
        let floor = RecordingFloor::default();
        let ctl = Control::default();
        let c = ctl.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            c.cancel();
        });
        let t0 = std::time::Instant::now();
        let out = run_plant(
            PlantParams::default(),
            &RunOptions {
                units: 0,
                batch: 50,
                truth: None,
            },
            &floor,
            &ctl,
            &(),
            &mut |_, _| {},
        )
        .await
        .unwrap();
        assert!(!out.complete);
        assert_eq!(out.units_made, 0);
        assert!(out.truth.units.is_empty());
        assert!(t0.elapsed() < std::time::Duration::from_secs(2));
    }

    #[tokio::test]
    async fn pause_holds_every_lane_at_a_checkpoint() {
        let floor = RecordingFloor::default();
        let ctl = Control::default();
        ctl.pause();
        let params = PlantParams {
            cycle_ms: 0,
            settle_ms: 1,
            ..PlantParams::default()
        };
        let c = ctl.clone();
        let run = tokio::spawn(async move {
            run_plant(
                params,
                &RunOptions {
                    units: 3,
                    batch: 3,
                    truth: None,
                },
                &floor,
                &c,
                &(),
                &mut |_, _| {},
            )
            .await
            .map(|o| o.units_made)
        });
        let t0 = std::time::Instant::now();
        while ctl.lanes_waiting() < 2 {
            assert!(t0.elapsed() < std::time::Duration::from_secs(5));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!run.is_finished());
        ctl.resume();
        assert_eq!(run.await.unwrap().unwrap(), 3);
    }
}
