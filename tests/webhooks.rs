//! Flagger's webhooks end to end: the `serin` controller against the local cluster, its gates and
//! rollback webhook served by a real `serin loadtester` process, opened and closed as a person would.

use std::time::Duration;

use kube::Client;
use serde_json::{Value, json};
use serin::api::{HookResult, Phase};
use serin_e2e::loadtester::LoadTester;
use serin_e2e::podinfo::{
    annotate_canary, deployment, image_of, record_weights, route_weight, setup, status, wait_phase,
    wait_weight_at_least,
};
use serin_e2e::{SerinProcess, apply};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

async fn new_revision(client: &Client, ns: &str, image: &str) {
    apply::<k8s_openapi::api::apps::v1::Deployment>(client, ns, deployment(image, json!({}))).await;
}

fn hook(name: &str, kind: &str, url: String) -> Value {
    json!({"name": name, "type": kind, "url": url, "timeout": "5s"})
}

#[tokio::test]
async fn closed_gates_hold_the_phase_and_opening_them_moves_it_as_flaggers_do() {
    let lt = LoadTester::start(SERIN, &[]).await;
    let gate = format!("{}/gate/check", lt.url);
    let (client, ns) = setup(
        "hooks-gates",
        json!({"interval": "1s", "stepWeight": 25, "webhooks": [
            hook("approve-rollout", "confirm-rollout", gate.clone()),
            hook("approve-promotion", "confirm-promotion", gate)]}),
        json!({}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;

    new_revision(&client, &ns, "podinfo:2.0.0").await;
    let s = wait_phase(&client, &ns, Phase::Waiting, Duration::from_secs(15)).await;
    let w = &s.webhooks[0];
    assert_eq!(
        (w.name.as_str(), w.result, w.message.as_str()),
        ("approve-rollout", HookResult::Failed, "HTTP 403: Forbidden")
    );
    // Held for several intervals: still Waiting, and the canary is not scaled up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status(&client, &ns).await.phase, Some(Phase::Waiting));
    assert_eq!(image_of(&client, &ns, "podinfo").await.1, 0);

    assert_eq!(lt.gate("gate/open", "podinfo", &ns).await, 202);
    wait_phase(&client, &ns, Phase::Progressing, Duration::from_secs(15)).await;
    // Closed again at once: the promotion will wait for it.
    assert_eq!(lt.gate("gate/close", "podinfo", &ns).await, 202);
    let s = wait_phase(
        &client,
        &ns,
        Phase::WaitingPromotion,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(s.canary_weight, 100);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        status(&client, &ns).await.phase,
        Some(Phase::WaitingPromotion)
    );
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:1.0.0"
    );

    assert_eq!(lt.gate("gate/open", "podinfo", &ns).await, 202);
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(60)).await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:2.0.0"
    );
}

#[tokio::test]
async fn an_open_rollback_gate_rolls_the_canary_back() {
    let lt = LoadTester::start(SERIN, &[]).await;
    let (client, ns) = setup(
        "hooks-rollback",
        json!({"interval": "1s", "stepWeight": 10, "webhooks": [
            hook("rollback", "rollback", format!("{}/rollback/check", lt.url))]}),
        json!({}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    new_revision(&client, &ns, "podinfo:2.0.0").await;
    wait_weight_at_least(&client, &ns, 20, Duration::from_secs(30)).await;
    assert_eq!(lt.gate("rollback/open", "podinfo", &ns).await, 202);
    let s = wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(15)).await;
    assert!(s.canary_weight < 60, "rolled back at {}", s.canary_weight);
    assert_eq!(route_weight(&client, &ns).await, Some(0));
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:1.0.0"
    );
    let rollback = s.webhooks.iter().find(|w| w.name == "rollback").unwrap();
    assert_eq!(rollback.result, HookResult::Passed);
}

#[tokio::test]
async fn a_failing_pre_rollout_webhook_counts_as_a_failed_check() {
    let lt = LoadTester::start(SERIN, &[]).await;
    let (client, ns) = setup(
        "hooks-pre",
        json!({"interval": "1s", "stepWeight": 10, "threshold": 2, "webhooks": [
            hook("smoke-test", "pre-rollout", format!("{}/gate/halt", lt.url))]}),
        json!({}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    let (weights, recorder) = record_weights(client.clone(), ns.clone());
    new_revision(&client, &ns, "podinfo:2.0.0").await;
    let s = wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(30)).await;
    recorder.abort();
    assert_eq!(s.failed_checks, 2);
    assert_eq!(
        *weights.lock().unwrap(),
        [0],
        "no traffic before the pre-rollout webhook passed"
    );
    let w = &s.webhooks[0];
    assert_eq!(
        (w.result, w.message.as_str()),
        (HookResult::Failed, "HTTP 403: Forbidden")
    );
}

#[tokio::test]
async fn promote_abort_and_pause_by_annotation() {
    let (client, ns) = setup(
        "hooks-manual",
        json!({"interval": "2s", "stepWeight": 10}),
        json!({}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    new_revision(&client, &ns, "podinfo:2.0.0").await;
    wait_weight_at_least(&client, &ns, 10, Duration::from_secs(30)).await;

    annotate_canary(&client, &ns, "serin.dev/pause", Some("true")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let paused_at = route_weight(&client, &ns).await.unwrap();
    // Three intervals: the weight holds.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(route_weight(&client, &ns).await, Some(paused_at));
    let s = status(&client, &ns).await;
    assert_eq!(s.phase, Some(Phase::Progressing));
    assert!(s.manual.as_ref().is_some_and(|m| m.paused));
    annotate_canary(&client, &ns, "serin.dev/pause", None).await;
    wait_weight_at_least(&client, &ns, paused_at + 10, Duration::from_secs(10)).await;

    annotate_canary(&client, &ns, "serin.dev/promote", Some("first")).await;
    let s = wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(30)).await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:2.0.0"
    );
    assert_eq!(s.manual.and_then(|m| m.promote).as_deref(), Some("first"));

    new_revision(&client, &ns, "podinfo:3.0.0").await;
    wait_weight_at_least(&client, &ns, 10, Duration::from_secs(30)).await;
    annotate_canary(&client, &ns, "serin.dev/abort", Some("stop")).await;
    wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(15)).await;
    assert_eq!(route_weight(&client, &ns).await, Some(0));
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:2.0.0"
    );
}
