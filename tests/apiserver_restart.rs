//! The API server restarted mid-rollout: Serin holds (it can write nothing, and past its renew deadline
//! stops acting), reconnects, and resumes at the same weight. A test binary of its own: while the API
//! server is down, no other test can run.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;
use serin::api::Phase;
use serin_e2e::podinfo::{
    deployment, image_of, record_weights, setup, wait_phase, wait_weight_at_least,
};
use serin_e2e::{SerinProcess, StartOnDrop, apply, cluster_script, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

fn apiserver(action: &str) {
    cluster_script("apiserver", action);
}

#[tokio::test]
async fn serin_holds_through_an_api_server_restart_and_resumes_at_the_same_weight() {
    let (client, ns) = setup(
        "apiserver-restart",
        json!({"interval": "2s", "stepWeight": 10, "maxWeight": 50}),
        json!({}),
    )
    .await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    let (seen, recorder) = record_weights(client.clone(), ns.clone());
    apply::<Deployment>(&client, &ns, deployment("podinfo:2.0.0", json!({}))).await;
    wait_weight_at_least(&client, &ns, 20, Duration::from_secs(30)).await;
    // The recorder is a reader of its own: the API server goes only once it has seen the weight too, or
    // the step would be missing from its record though Serin took it.
    wait_for(
        "the recorder to see weight 20",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || async {
            let seen = seen.lock().unwrap().clone();
            if seen.iter().any(|w| *w >= 20) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    let _restart = StartOnDrop("apiserver");
    // The script blocks: off the test's runtime, so the weight recorder keeps sampling.
    let run = |action: &'static str| tokio::task::spawn_blocking(move || apiserver(action));
    run("stop").await.unwrap();
    let down = Instant::now();
    // Down for longer than the renew deadline (10s): Serin stops acting, then leads again.
    tokio::time::sleep(Duration::from_secs(12)).await;
    run("start").await.unwrap();
    eprintln!("measured: the API server was down {:?}", down.elapsed());
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    recorder.abort();
    let weights = seen.lock().unwrap().clone();
    assert_eq!(
        weights,
        vec![0, 10, 20, 30, 40, 50, 0],
        "resumed where it was: no step lost or repeated"
    );
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:2.0.0"
    );
    let log = std::fs::read_to_string(&serin.log).unwrap_or_default();
    // Whether the lease outlived the outage depends on how long the API server took to stop; if Serin
    // stopped acting, it led again.
    if log.contains("lost leadership") {
        assert!(
            log.matches("became leader").count() >= 2,
            "lost the lease and never led again"
        );
    }
}
