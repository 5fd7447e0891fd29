//! Contour end to end: the `serin` binary against the local cluster with Contour's HTTPProxy CRD, the
//! traffic simulator splitting requests by the HTTPProxy Serin writes, and Prometheus judging the canary
//! through Contour's built-in queries (Envoy's `envoy_cluster_upstream_rq`, `envoy_cluster_upstream_rq_time`).

use std::time::Duration;

use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin::routing::contour::http_proxies;
use serin_e2e::podinfo::{wait_phase, wait_promoted};
use serin_e2e::rollout::{
    WeightRecorder, faulty_rolled_back, hold_and_measure, resume, roll_out, wait_weight,
    wait_window_empty,
};
use serin_e2e::{
    SerinProcess, annotate, apply, client, install_crds, namespace, prometheus_value, wait_for,
};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// A namespace with podinfo 1.0.0 and a contour Canary with `service` settings and `analysis`, Serin
/// running for it, and the simulator's request settings on the HTTPProxy.
async fn start(
    prefix: &str,
    service: Value,
    analysis: Value,
    annotations: Value,
) -> (Client, String, SerinProcess) {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    roll_out(&client, &ns, "podinfo:1.0.0", 0.0).await;
    let mut svc = json!({"port": 9898});
    if let (Some(s), Some(extra)) = (svc.as_object_mut(), service.as_object()) {
        s.extend(extra.clone());
    }
    apply::<Canary>(&client, &ns, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": "contour", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": svc, "analysis": analysis}}))
    .await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    // The simulator's settings, under a field manager of the test's own (Serin owns only what it sets).
    annotate(&client, &ns, &http_proxies(), "podinfo", annotations).await;
    (client, ns, serin)
}

async fn proxy(client: &Client, ns: &str) -> Option<DynamicObject> {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &http_proxies())
        .get_opt("podinfo")
        .await
        .ok()
        .flatten()
}

/// The canary's weight in the HTTPProxy's split (its last route), as Contour would read it.
async fn canary_weight(client: &Client, ns: &str) -> Option<i64> {
    let p = proxy(client, ns).await?;
    let route = p.data["spec"]["routes"].as_array()?.last()?.clone();
    route["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "podinfo-canary")
        .map(|s| s["weight"].as_i64().unwrap_or(0))
}

/// A query of the canary cluster's share of the requests Envoy counts over the last 5s, in percent.
fn canary_share(ns: &str) -> String {
    format!(
        r#"sum(increase(envoy_cluster_upstream_rq{{envoy_cluster_name="{ns}_podinfo-canary_9898"}}[5s])) / sum(increase(envoy_cluster_upstream_rq{{envoy_cluster_name=~"{ns}_podinfo-(canary|primary)_9898"}}[5s])) * 100"#
    )
}

#[tokio::test]
async fn a_good_image_steps_through_the_http_proxy_and_a_faulty_one_is_rolled_back() {
    let checks = json!([
        {"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}},
        {"name": "request-duration", "interval": "10s", "thresholdRange": {"max": 500}}]);
    let (client, ns, serin) = start(
        "contour",
        json!({"timeout": "15s", "retries": {"attempts": 3, "perTryTimeout": "5s", "retryOn": "5xx"}}),
        json!({"interval": "2s", "stepWeight": 25, "maxWeight": 50, "threshold": 1, "metrics": checks}),
        json!({"trafficsim.serin.dev/rps": "100"}),
    )
    .await;
    let p = proxy(&client, &ns).await.expect("Serin made the HTTPProxy");
    let route = &p.data["spec"]["routes"][0];
    assert_eq!(route["conditions"], json!([{"prefix": "/"}]));
    assert_eq!(
        route["timeoutPolicy"],
        json!({"response": "15s", "idle": "5m"})
    );
    assert_eq!(
        route["retryPolicy"],
        json!({"count": 3, "perTryTimeout": "5s", "retryOn": ["5xx"]})
    );

    let recorder = {
        let (client, ns) = (client.clone(), ns.clone());
        WeightRecorder::start(move || {
            let (client, ns) = (client.clone(), ns.clone());
            async move { canary_weight(&client, &ns).await }
        })
    };
    roll_out(&client, &ns, "podinfo:2.0.0", 0.0).await;
    wait_weight("the HTTPProxy", 25, || canary_weight(&client, &ns)).await;
    let share = hold_and_measure(&client, &ns, &canary_share(&ns)).await;
    eprintln!("measured: contour canary share {share:.1}% at weight 25");
    assert!((share - 25.0).abs() <= 6.0, "the canary got {share:.1}%");
    // A new Serin process resumes where the HTTPProxy says.
    drop(serin);
    let _serin = SerinProcess::start(SERIN, &ns, "b").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(canary_weight(&client, &ns).await, Some(25));
    resume(&client, &ns).await;
    wait_promoted(&client, &ns, "podinfo:2.0.0", Duration::from_secs(60)).await;
    assert_eq!(recorder.stop().await, [0, 25, 50, 0]);

    wait_window_empty(&format!(
        r#"sum(rate(envoy_cluster_upstream_rq{{envoy_cluster_name="{ns}_podinfo-canary_9898"}}[10s]))"#
    ))
    .await;
    faulty_rolled_back(&client, &ns, "podinfo:3.0.0", "podinfo:2.0.0").await;
    assert_eq!(canary_weight(&client, &ns).await, Some(0));
}

#[tokio::test]
async fn ab_sends_the_requests_with_the_header_to_the_canary_through_the_http_proxy() {
    let analysis = json!({"interval": "2s", "iterations": 6,
        "match": [{"headers": {"x-canary": {"exact": "insider"}}}]});
    let mix = json!([{"share": 0.25, "headers": {"x-canary": "insider"}}]).to_string();
    let (client, ns, _serin) = start(
        "contour-ab",
        json!({}),
        analysis,
        json!({"trafficsim.serin.dev/rps": "100", "trafficsim.serin.dev/request-mix": mix}),
    )
    .await;
    roll_out(&client, &ns, "podinfo:2.0.0", 0.0).await;
    wait_for(
        "the HTTPProxy to route the header to the canary",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let routes = proxy(&client, &ns)
                .await
                .map(|p| p.data["spec"]["routes"].clone())
                .unwrap_or_default();
            if routes[0]["conditions"][1]["header"]
                == json!({"name": "x-canary", "exact": "insider"})
            {
                Ok(())
            } else {
                Err(routes.to_string())
            }
        },
    )
    .await;
    // The share over a 5-s window once the simulator routes by the new HTTPProxy: on a busy machine it
    // may take it up a moment late, and a window reaching back before then reads low (CI saw 18%).
    let share = wait_for(
        "the canary's share of requests to settle at the header's 25%",
        Duration::from_secs(30),
        Duration::from_secs(1),
        || async {
            match prometheus_value(&canary_share(&ns)).await {
                Ok(share) if (share - 25.0).abs() <= 6.0 => Ok(share),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eprintln!("measured: contour A/B canary share {share:.1}% (25% of requests match)");
    wait_promoted(&client, &ns, "podinfo:2.0.0", Duration::from_secs(60)).await;
    let routes = proxy(&client, &ns).await.unwrap().data["spec"]["routes"].clone();
    assert_eq!(
        routes.as_array().map(Vec::len),
        Some(1),
        "the header route is gone after promotion: {routes}"
    );
}
