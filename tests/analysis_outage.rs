//! Prometheus taken away mid-analysis: the canary holds where it is (never a pass, never a failed check),
//! and goes on to promotion once Prometheus is back. A test binary of its own: while Prometheus is down,
//! no other test may need it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;
use serin::api::{CheckVerdict, Phase};
use serin_e2e::podinfo::{
    annotated, deployment, image_of, route_weight, setup, status, wait_phase, wait_weight_at_least,
};
use serin_e2e::{SerinProcess, StartOnDrop, apply, cluster_script, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

fn prometheus(action: &str) {
    cluster_script("prometheus", action);
}

#[tokio::test]
async fn the_canary_holds_while_prometheus_is_down_and_completes_when_it_is_back() {
    let analysis = json!({"interval": "2s", "stepWeight": 10, "maxWeight": 60, "threshold": 2, "metrics": [
        {"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}},
        {"name": "request-duration", "interval": "10s", "thresholdRange": {"max": 500}}
    ]});
    let (client, ns) = setup("analysis-outage", analysis, json!({})).await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    let pods = json!({"trafficsim.serin.dev/latency-ms": "20"});
    apply::<Deployment>(
        &client,
        &ns,
        annotated(deployment("podinfo:2.0.0", json!({})), pods),
    )
    .await;
    wait_weight_at_least(&client, &ns, 20, Duration::from_secs(60)).await;

    let restart = StartOnDrop("prometheus");
    prometheus("stop");
    let held = wait_for(
        "the canary to hold on the unreachable Prometheus",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let s = status(&client, &ns).await;
            let unreachable = s.checks.iter().all(|c| c.verdict == CheckVerdict::Error)
                && s.checks.iter().any(|c| {
                    c.message
                        .as_deref()
                        .is_some_and(|m| m.contains("could not be reached"))
                });
            if unreachable && !s.checks.is_empty() {
                Ok(s)
            } else {
                Err(format!("{:?}", s.checks))
            }
        },
    )
    .await;
    let weight = route_weight(&client, &ns).await;
    // Three more intervals without Prometheus: nothing moves, nothing counts as failed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = status(&client, &ns).await;
    assert_eq!(route_weight(&client, &ns).await, weight, "the weight holds");
    assert_eq!(s.phase, Some(Phase::Progressing));
    assert_eq!(
        s.failed_checks, held.failed_checks,
        "no failed checks while it was down"
    );
    assert_eq!(s.failed_checks, 0);
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(
        ready
            .message
            .as_deref()
            .is_some_and(|m| m.contains("could not be reached")),
        "{ready:?}"
    );

    drop(restart);
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(120)).await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await,
        ("podinfo:2.0.0".into(), 3)
    );
}
