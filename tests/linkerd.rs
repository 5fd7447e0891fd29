//! Linkerd and SMI end to end: the `serin` binary against the local cluster with SMI's TrafficSplit CRD,
//! the traffic simulator splitting the root service's requests by the TrafficSplit Serin writes, and
//! Prometheus judging the canary through Linkerd's built-in queries (`response_total`,
//! `response_latency_ms`).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin::routing::smi::{SmiVersion, traffic_splits};
use serin_e2e::podinfo::{deployment, image_of, status, wait_phase, wait_promoted};
use serin_e2e::rollout::{
    WeightRecorder, faulty_rolled_back, hold_and_measure, resume, roll_out, wait_weight,
    wait_window_empty,
};
use serin_e2e::{SerinProcess, annotate, apply, client, install_crds, namespace, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

async fn start(prefix: &str, provider: &str, analysis: Value) -> (Client, String, SerinProcess) {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    roll_out(&client, &ns, "podinfo:1.0.0", 0.0).await;
    apply::<Canary>(&client, &ns, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": provider, "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898}, "analysis": analysis}}))
    .await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    (client, ns, serin)
}

async fn split(client: &Client, ns: &str, version: SmiVersion) -> Option<DynamicObject> {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &traffic_splits(version))
        .get_opt("podinfo")
        .await
        .ok()
        .flatten()
}

async fn canary_weight(client: &Client, ns: &str, version: SmiVersion) -> Option<i64> {
    let s = split(client, ns, version).await?;
    s.data["spec"]["backends"]
        .as_array()?
        .iter()
        .find(|b| b["service"] == "podinfo-canary")
        .and_then(|b| b["weight"].as_i64())
}

/// A query of the canary deployment's share of the inbound responses Linkerd's series count over the
/// last 5s.
fn canary_share(ns: &str) -> String {
    let sel = |d: &str| format!(r#"namespace="{ns}", deployment=~"{d}", direction="inbound""#);
    format!(
        "sum(increase(response_total{{{}}}[5s])) / sum(increase(response_total{{{}}}[5s])) * 100",
        sel("podinfo"),
        sel("podinfo|podinfo-primary")
    )
}

#[tokio::test]
async fn linkerd_steps_through_the_traffic_split_and_rolls_a_faulty_image_back() {
    let checks = json!([
        {"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}},
        {"name": "request-duration", "interval": "10s", "thresholdRange": {"max": 500}}]);
    let (client, ns, serin) = start(
        "linkerd",
        "linkerd",
        json!({"interval": "2s", "stepWeight": 25, "maxWeight": 50, "threshold": 1, "metrics": checks}),
    )
    .await;
    let v = SmiVersion::V1alpha1;
    let s = split(&client, &ns, v)
        .await
        .expect("Serin made the TrafficSplit");
    assert_eq!(s.data["spec"]["service"], "podinfo");
    // The simulator's rate for this split, under a field manager of the test's own.
    annotate(
        &client,
        &ns,
        &traffic_splits(v),
        "podinfo",
        json!({"trafficsim.serin.dev/rps": "100"}),
    )
    .await;

    let recorder = {
        let (client, ns) = (client.clone(), ns.clone());
        WeightRecorder::start(move || {
            let (client, ns) = (client.clone(), ns.clone());
            async move { canary_weight(&client, &ns, v).await }
        })
    };
    roll_out(&client, &ns, "podinfo:2.0.0", 0.0).await;
    wait_weight("the TrafficSplit", 25, || canary_weight(&client, &ns, v)).await;
    let share = hold_and_measure(&client, &ns, &canary_share(&ns)).await;
    eprintln!("measured: linkerd canary share {share:.1}% at weight 25");
    assert!((share - 25.0).abs() <= 6.0, "the canary got {share:.1}%");
    // A new Serin process resumes where the TrafficSplit says.
    drop(serin);
    let _serin = SerinProcess::start(SERIN, &ns, "b").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(canary_weight(&client, &ns, v).await, Some(25));
    resume(&client, &ns).await;
    wait_promoted(&client, &ns, "podinfo:2.0.0", Duration::from_secs(60)).await;
    assert_eq!(recorder.stop().await, [0, 25, 50, 0]);

    wait_window_empty(&format!(
        r#"sum(rate(response_total{{namespace="{ns}", deployment="podinfo", direction="inbound"}}[10s]))"#
    ))
    .await;
    faulty_rolled_back(&client, &ns, "podinfo:3.0.0", "podinfo:2.0.0").await;
    assert_eq!(canary_weight(&client, &ns, v).await, Some(0));
}

#[tokio::test]
async fn smi_v1alpha3_blue_green_is_promoted_and_ab_is_refused_by_name() {
    let (client, ns, _serin) = start(
        "smi",
        "smi:v1alpha3",
        json!({"interval": "1s", "iterations": 2}),
    )
    .await;
    let v = SmiVersion::V1alpha3;
    assert_eq!(canary_weight(&client, &ns, v).await, Some(0));
    apply::<Deployment>(&client, &ns, deployment("podinfo:2.0.0", json!({}))).await;
    wait_promoted(&client, &ns, "podinfo:2.0.0", Duration::from_secs(60)).await;

    // A/B needs request matching, which a TrafficSplit has not: the Canary says so, naming the field.
    Api::<Canary>::namespaced(client.clone(), &ns)
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"analysis": {"match": [{"headers": {"x-canary": {"exact": "insider"}}}]}}})),
        )
        .await
        .expect("asking for A/B");
    apply::<Deployment>(&client, &ns, deployment("podinfo:3.0.0", json!({}))).await;
    wait_for(
        "the Canary to say why A/B can't run",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let s = status(&client, &ns).await;
            let said = s
                .conditions
                .iter()
                .filter_map(|c| c.message.clone())
                .find(|m| m.contains("spec.analysis.match"));
            said.ok_or_else(|| format!("{:?}", s.conditions))
        },
    )
    .await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:2.0.0"
    );
}
