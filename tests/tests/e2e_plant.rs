//! The simulated plant against the real binaries: `threadline-sim`, two `threadline-gateway run`,
//! `threadline-aggregator run` over a real Mosquitto and PostgreSQL. Every unit, lot and shipment
//! of the plant's ground truth must come back from the API exactly.

use std::time::Duration;

use serde_json::json;
use threadline_e2e::{
    PlantEnv, PlantRun, audit_ok, duplicates, read_truth, rejected_scans, scan_rejections, wait_for,
};
use threadline_simulators::plant::{CauseTruth, Truth};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_plant_matches_ground_truth() -> anyhow::Result<()> {
    // 30 drives: the injected bad bearing batch (drives 13–24) lies inside the run, with
    // drives before and after it to compare with (see injected_causes_are_found).
    let run = PlantRun {
        units: 30,
        ..PlantRun::default()
    };
    let Some(env) = PlantEnv::start(&run).await? else {
        return Ok(());
    };
    env.go()?;
    env.wait_sim_says("plant: done", Duration::from_secs(270))
        .await?;
    let truth = read_truth(&env.truth_path)?;
    assert_eq!(truth.finished_units().count(), run.units);
    let diffs = env.converge(&truth, Duration::from_secs(30)).await?;
    assert!(diffs.is_empty(), "{}", env.diff_report(&diffs));
    // Garbled scans are reported, never dropped.
    let rejected = rejected_scans(&env.api).await?;
    for r in &truth.rejected_scans {
        assert!(
            rejected.contains(&r.raw),
            "scan_rejected {:?} missing",
            r.raw
        );
    }
    route_refusals_are_reported(&env.api, &truth).await?;
    audit_ok(&env.api).await?;
    assert_eq!(duplicates(&env.db).await?, Vec::<String>::new());
    injected_causes_are_found(&env.api, &truth).await?;
    env.finish().await;
    Ok(())
}

/// ST130 enforces the drive's route (config/demo/routes.toml): every drive the plant presented
/// there before its end-of-line test was refused with the missing operation as the reason, and
/// no other drive was refused there (each was packed: the genealogy matched above).
async fn route_refusals_are_reported(
    api: &threadline_e2e::Api,
    truth: &Truth,
) -> anyhow::Result<()> {
    assert!(
        !truth.route_refusals.is_empty(),
        "the demo plant presents drives too early (skip_test_every)"
    );
    let at_packing: Vec<(String, String)> = scan_rejections(api)
        .await?
        .into_iter()
        .filter(|(station, _, _)| station == "ST130")
        .map(|(_, raw, reason)| (raw, reason))
        .collect();
    let expected: Vec<(String, String)> = truth
        .route_refusals
        .iter()
        .map(|r| (r.unit.clone(), r.reason.clone()))
        .collect();
    let mut got = at_packing.clone();
    got.sort();
    let mut want = expected;
    want.sort();
    assert_eq!(got, want, "scan_rejected at ST130: {at_packing:#?}");
    Ok(())
}

/// The plant's injected causes (truth `causes`) come out of the analytics API, as
/// docs/analysis.md walks them: common cause on the drives that failed a test, against the whole
/// run, ranks the bad bearing batch first — clearly: the best other factor's p-value is at least
/// 10 times larger (`model/cause_tests.rs` holds the plant model to that for 40 seeds) — and SPC
/// on the press pressure flags drifting sub-assemblies.
async fn injected_causes_are_found(api: &threadline_e2e::Api, truth: &Truth) -> anyhow::Result<()> {
    let bad = truth
        .bad_lot()
        .expect("the plant injects a bad bearing batch");
    let failed = truth.failed_finished_units();
    assert!(failed.len() >= 3, "too few failures to analyse: {failed:?}");
    let population = json!({
        "part": "P-DRIVE-200",
        "from": "2000-01-01T00:00:00Z",
        "to": "2100-01-01T00:00:00Z",
    });
    let (st, v) = api
        .post(
            "/api/v1/analysis/common-cause",
            &json!({"units": failed, "population": population, "limit": 200}),
        )
        .await?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["units"].as_u64(), Some(failed.len() as u64), "{v}");
    assert_eq!(
        v["population"].as_u64(),
        Some(truth.finished_units().count() as u64),
        "{v}"
    );
    let factors = v["factors"].as_array().cloned().unwrap_or_default();
    let top = &factors[0];
    assert_eq!(top["id"], bad, "the bad batch is not ranked first: {v}");
    assert!(
        top["kind"] == "component_lot" || top["kind"] == "supplier_batch",
        "{top}"
    );
    let p_bad = top["p_value"].as_f64().unwrap_or(1.0);
    let next = factors
        .iter()
        .find(|f| f["id"] != bad)
        .expect("other factors are tested");
    assert!(
        next["p_value"].as_f64().unwrap_or(0.0) >= 10.0 * p_bad,
        "no clear margin: bad batch p = {p_bad:e}, next {next}"
    );

    let drifting: Vec<String> = truth
        .causes
        .iter()
        .find_map(|c| match c {
            CauseTruth::Drift { units, .. } => Some(units.clone()),
            CauseTruth::SupplierBatch { .. } => None,
        })
        .expect("the plant injects a press drift");
    let (st, v) = api
        .get("/api/v1/spc?station=ST10&parameter=st10.pressure")
        .await?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["n"].as_u64(),
        Some(truth.units.len() as u64 - truth.finished_units().count() as u64),
        "one pressure per sub-assembly: {v}"
    );
    let flagged: Vec<String> = v["points"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["violations"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|p| p["unit"].as_str().map(str::to_owned))
        .collect();
    assert!(
        flagged.iter().filter(|u| drifting.contains(u)).count() >= 2,
        "SPC does not flag the drift: flagged {flagged:?}, drifting {drifting:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_plant_survives_gateway_broker_aggregator_and_database_outages() -> anyhow::Result<()> {
    let run = PlantRun {
        units: 20,
        seed: 11,
        ..PlantRun::default()
    };
    let Some(mut env) = PlantEnv::start(&run).await? else {
        return Ok(());
    };
    env.go()?;
    // A gateway SIGKILLed at a unit boundary (a PLC edge while no gateway polls is lost on any
    // real line too) and restarted on its outbox.
    tokio::time::sleep(Duration::from_secs(6)).await;
    env.signal_sim("USR1");
    env.wait_sim_says("plant: paused", Duration::from_secs(30))
        .await?;
    env.kill_and_restart_gateway(1)?;
    env.wait_gateways_online().await?;
    env.signal_sim("USR2");
    // The broker restarted under load, without persistence.
    tokio::time::sleep(Duration::from_secs(5)).await;
    env.broker.restart().await;
    // The aggregator SIGKILLed under load and restarted.
    tokio::time::sleep(Duration::from_secs(5)).await;
    env.kill_and_restart_aggregator().await?;
    // PostgreSQL unreachable for a while under load: the aggregator stops acking, reports
    // itself unhealthy, and catches up when the database is back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.db_proxy.cut();
    let unhealthy = wait_for(
        "aggregator reports the database down",
        Duration::from_secs(30),
        || async {
            let (code, body) = env.api.get("/healthz").await.ok()?;
            (code == 503).then_some(body)
        },
    )
    .await?;
    assert!(unhealthy.to_string().contains("database"), "{unhealthy}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.db_proxy.restore();
    env.api.wait_healthy(Duration::from_secs(60)).await?;
    env.wait_sim_says("plant: done", Duration::from_secs(240))
        .await?;
    let truth = read_truth(&env.truth_path)?;
    let diffs = env.converge(&truth, Duration::from_secs(60)).await?;
    assert!(diffs.is_empty(), "{}", env.diff_report(&diffs));
    audit_ok(&env.api).await?;
    assert_eq!(duplicates(&env.db).await?, Vec::<String>::new());
    env.finish().await;
    Ok(())
}
