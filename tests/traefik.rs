//! Traefik end to end: the `serin` binary against the local cluster with Traefik's TraefikService CRD, the
//! traffic simulator splitting requests by the TraefikService Serin writes, and Prometheus judging the
//! canary through Traefik's built-in queries (`traefik_service_request_duration_seconds`).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin::routing::traefik::traefik_services;
use serin_e2e::podinfo::{deployment, status, wait_phase, wait_promoted};
use serin_e2e::rollout::{
    WeightRecorder, faulty_rolled_back, hold_and_measure, resume, roll_out, wait_weight,
    wait_window_empty,
};
use serin_e2e::{SerinProcess, annotate, apply, client, install_crds, namespace, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

async fn start(prefix: &str, analysis: Value) -> (Client, String, SerinProcess) {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    roll_out(&client, &ns, "podinfo:1.0.0", 0.0).await;
    apply::<Canary>(&client, &ns, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": "traefik", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898}, "analysis": analysis}}))
    .await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    (client, ns, serin)
}

/// The canary's weight in the TraefikService (absent while it is 0, as Flagger writes it).
async fn canary_weight(client: &Client, ns: &str) -> Option<i64> {
    let ts = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &traefik_services())
        .get_opt("podinfo")
        .await
        .ok()
        .flatten()?;
    let services = ts.data["spec"]["weighted"]["services"].as_array()?.clone();
    Some(
        services
            .iter()
            .find(|s| s["name"] == "podinfo-canary")
            .map_or(0, |s| s["weight"].as_i64().unwrap_or(1)),
    )
}

/// A query of the canary service's share of the requests Traefik counts over the last 5s, in percent.
fn canary_share(ns: &str) -> String {
    let sel = |s: &str| {
        format!(
            r#"traefik_service_request_duration_seconds_count{{service=~"{ns}-{s}-9898@kubernetescrd"}}"#
        )
    };
    format!(
        "sum(increase({}[5s])) / sum(increase({}[5s])) * 100",
        sel("podinfo-canary"),
        sel("podinfo-(canary|primary)")
    )
}

#[tokio::test]
async fn a_good_image_steps_through_the_traefik_service_and_a_faulty_one_is_rolled_back() {
    let checks = json!([
        {"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}},
        {"name": "request-duration", "interval": "10s", "thresholdRange": {"max": 500}}]);
    let (client, ns, serin) = start(
        "traefik",
        json!({"interval": "2s", "stepWeight": 25, "maxWeight": 50, "threshold": 1, "metrics": checks}),
    )
    .await;
    annotate(
        &client,
        &ns,
        &traefik_services(),
        "podinfo",
        json!({"trafficsim.serin.dev/rps": "100"}),
    )
    .await;

    let recorder = {
        let (client, ns) = (client.clone(), ns.clone());
        WeightRecorder::start(move || {
            let (client, ns) = (client.clone(), ns.clone());
            async move { canary_weight(&client, &ns).await }
        })
    };
    roll_out(&client, &ns, "podinfo:2.0.0", 0.0).await;
    wait_weight("the TraefikService", 25, || canary_weight(&client, &ns)).await;
    let share = hold_and_measure(&client, &ns, &canary_share(&ns)).await;
    eprintln!("measured: traefik canary share {share:.1}% at weight 25");
    assert!((share - 25.0).abs() <= 6.0, "the canary got {share:.1}%");
    // A new Serin process resumes where the TraefikService says.
    drop(serin);
    let _serin = SerinProcess::start(SERIN, &ns, "b").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(canary_weight(&client, &ns).await, Some(25));
    resume(&client, &ns).await;
    wait_promoted(&client, &ns, "podinfo:2.0.0", Duration::from_secs(60)).await;
    assert_eq!(recorder.stop().await, [0, 25, 50, 0]);

    wait_window_empty(&format!(
        r#"sum(rate(traefik_service_request_duration_seconds_count{{service="{ns}-podinfo-canary-9898@kubernetescrd"}}[10s]))"#
    ))
    .await;
    faulty_rolled_back(&client, &ns, "podinfo:3.0.0", "podinfo:2.0.0").await;
    assert_eq!(canary_weight(&client, &ns).await, Some(0));
}

#[tokio::test]
async fn ab_is_refused_by_name() {
    let (client, ns, _serin) = start(
        "traefik-ab",
        json!({"interval": "1s", "iterations": 2,
            "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}),
    )
    .await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:2.0.0", json!({}))).await;
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
                .find(|m| m.contains("spec.analysis.match") && m.contains("traefik"));
            said.map(|_| ())
                .ok_or_else(|| format!("{:?}", s.conditions))
        },
    )
    .await;
    assert_eq!(canary_weight(&client, &ns).await, Some(0));
}

/// Mirroring through the TraefikService's `mirroring`: a revision failing half its requests gets half the
/// copies, is rolled back on their errors, and no user request reaches it.
#[tokio::test]
async fn mirroring_keeps_the_canarys_errors_from_users() {
    let checks =
        json!([{"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}}]);
    let (client, ns, _serin) = start(
        "traefik-mirror",
        json!({"interval": "2s", "iterations": 3, "threshold": 1, "mirror": true, "mirrorWeight": 50,
            "metrics": checks}),
    )
    .await;
    annotate(
        &client,
        &ns,
        &traefik_services(),
        "podinfo",
        json!({"trafficsim.serin.dev/rps": "100"}),
    )
    .await;
    let service = || async {
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &traefik_services())
            .get("podinfo")
            .await
            .ok()
    };
    let (copies_failed, users) =
        serin_e2e::rollout::mirrored_faulty_rolled_back(&client, &ns, "podinfo", || async {
            service().await.is_some_and(|s| {
                s.data["spec"]["mirroring"]["mirrors"][0]["name"] == "podinfo-canary"
            })
        })
        .await;
    eprintln!(
        "measured: traefik mirroring: {copies_failed} failed copies at the canary, 0 of {users} user requests failed"
    );
    let s = service().await.unwrap();
    assert!(
        s.data["spec"].get("mirroring").is_none(),
        "the mirror is gone after the rollback: {}",
        s.data["spec"]
    );
}
