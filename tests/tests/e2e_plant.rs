//! The simulated plant against the real binaries: `threadline-sim`, two `threadline-gateway run`,
//! `threadline-aggregator run` over a real Mosquitto and PostgreSQL. Every unit, lot and shipment
//! of the plant's ground truth must come back from the API exactly.

use std::time::Duration;

use threadline_e2e::{
    PlantEnv, PlantRun, audit_ok, duplicates, read_truth, rejected_scans, wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_plant_matches_ground_truth() -> anyhow::Result<()> {
    let run = PlantRun {
        units: 20,
        ..PlantRun::default()
    };
    let Some(env) = PlantEnv::start(&run).await? else {
        return Ok(());
    };
    env.go()?;
    env.wait_sim_says("plant: done", Duration::from_secs(180))
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
    audit_ok(&env.api).await?;
    assert_eq!(duplicates(&env.db).await?, Vec::<String>::new());
    env.finish().await;
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
