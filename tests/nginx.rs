//! NGINX end to end: the `serin` binary against the local cluster, the user's Ingress copied as a canary
//! Ingress with ingress-nginx's canary annotations, the traffic simulator splitting the host's requests as
//! ingress-nginx would, and Prometheus judging the canary through the nginx built-in queries
//! (`nginx_ingress_controller_requests`, `nginx_ingress_controller_response_duration_seconds`), and the
//! sequential judge through its request time histogram.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin_e2e::podinfo::{annotated, wait_phase, wait_promoted};
use serin_e2e::rollout::{
    WeightRecorder, faulty_rolled_back, hold_and_measure, resume, roll_out, wait_weight,
    wait_window_empty,
};
use serin_e2e::{
    SerinProcess, apply, client, install_crds, namespace, prometheus_query, prometheus_value,
    wait_for,
};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// podinfo 1.0.0, the user's Ingress for it (host app.example.com to the apex Service), an nginx Canary.
async fn start(
    prefix: &str,
    analysis: Value,
    mix: Option<Value>,
) -> (Client, String, SerinProcess) {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    roll_out(&client, &ns, "podinfo:1.0.0", 0.0).await;
    let mut annotations = json!({"trafficsim.serin.dev/rps": "100"});
    if let Some(mix) = mix {
        annotations["trafficsim.serin.dev/request-mix"] = json!(mix.to_string());
    }
    apply::<Ingress>(&client, &ns, json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "podinfo", "annotations": annotations},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "app.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}}]}}]}}))
    .await;
    apply::<Canary>(&client, &ns, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": "nginx", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
            "service": {"port": 9898}, "analysis": analysis}}))
    .await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    (client, ns, serin)
}

async fn canary_ingress(client: &Client, ns: &str) -> Option<Ingress> {
    Api::<Ingress>::namespaced(client.clone(), ns)
        .get_opt("podinfo-canary")
        .await
        .ok()
        .flatten()
}

async fn canary_weight(client: &Client, ns: &str) -> Option<i64> {
    canary_ingress(client, ns)
        .await?
        .metadata
        .annotations?
        .get("nginx.ingress.kubernetes.io/canary-weight")?
        .parse()
        .ok()
}

/// A query of the canary's share of the requests through the user's Ingress over the last 5s, as
/// ingress-nginx counts them.
fn canary_share(ns: &str) -> String {
    let sel = format!(r#"namespace="{ns}", ingress="podinfo""#);
    format!(
        r#"sum(increase(nginx_ingress_controller_requests{{{sel}, canary!=""}}[5s])) / sum(increase(nginx_ingress_controller_requests{{{sel}}}[5s])) * 100"#
    )
}

#[tokio::test]
async fn a_canary_ingress_steps_by_weight_and_a_faulty_image_is_rolled_back() {
    let checks = json!([
        {"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}},
        {"name": "request-duration", "interval": "10s", "thresholdRange": {"max": 500}}]);
    let (client, ns, serin) = start(
        "nginx",
        json!({"interval": "2s", "stepWeight": 25, "maxWeight": 50, "threshold": 1, "metrics": checks}),
        None,
    )
    .await;
    let ing = canary_ingress(&client, &ns)
        .await
        .expect("Serin made podinfo-canary");
    let backend = &ing.spec.as_ref().unwrap().rules.as_ref().unwrap()[0]
        .http
        .as_ref()
        .unwrap()
        .paths[0]
        .backend;
    assert_eq!(backend.service.as_ref().unwrap().name, "podinfo-canary");
    assert_eq!(canary_weight(&client, &ns).await, Some(0));

    let recorder = {
        let (client, ns) = (client.clone(), ns.clone());
        WeightRecorder::start(move || {
            let (client, ns) = (client.clone(), ns.clone());
            async move { canary_weight(&client, &ns).await }
        })
    };
    roll_out(&client, &ns, "podinfo:2.0.0", 0.0).await;
    wait_weight("the canary Ingress", 25, || canary_weight(&client, &ns)).await;
    let share = hold_and_measure(&client, &ns, &canary_share(&ns)).await;
    eprintln!("measured: nginx canary share {share:.1}% at weight 25");
    assert!((share - 25.0).abs() <= 6.0, "the canary got {share:.1}%");
    // A new Serin process resumes where the canary Ingress says.
    drop(serin);
    let _serin = SerinProcess::start(SERIN, &ns, "b").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(canary_weight(&client, &ns).await, Some(25));
    resume(&client, &ns).await;
    wait_promoted(&client, &ns, "podinfo:2.0.0", Duration::from_secs(60)).await;
    assert_eq!(recorder.stop().await, [0, 25, 50, 0]);

    wait_window_empty(&format!(
        r#"sum(rate(nginx_ingress_controller_requests{{namespace="{ns}", ingress="podinfo", canary!=""}}[10s]))"#
    ))
    .await;
    faulty_rolled_back(&client, &ns, "podinfo:3.0.0", "podinfo:2.0.0").await;
    assert_eq!(canary_weight(&client, &ns).await, Some(0));
    // The user's Ingress was never written by Serin.
    let users = Api::<Ingress>::namespaced(client.clone(), &ns)
        .get("podinfo")
        .await
        .unwrap();
    assert!(
        users
            .metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .all(|m| m.manager.as_deref() != Some("serin")),
        "Serin wrote the user's Ingress"
    );
}

/// `compareToPrimary` on request-duration through ingress-nginx's request time histogram
/// (`nginx_ingress_controller_request_duration_seconds_bucket`): a canary twice as slow (10 ms against
/// the primary's 5) is proven slower and rolled back, where the fixed check (at most 500 ms) passes it.
#[tokio::test]
async fn a_slower_canary_is_caught_from_the_nginx_histogram() {
    let checks = json!([{"name": "request-duration", "interval": "10s",
        "thresholdRange": {"max": 500}, "compareToPrimary": {}}]);
    let (client, ns, _serin) = start(
        "nginx-judge",
        json!({"interval": "2s", "stepWeight": 25, "maxWeight": 50, "threshold": 2, "metrics": checks}),
        None,
    )
    .await;
    // The primary serves a while first: the judge reads its latency before the canary.
    tokio::time::sleep(Duration::from_secs(15)).await;
    apply::<Deployment>(
        &client,
        &ns,
        annotated(
            serin_e2e::podinfo::deployment("podinfo:2.0.0", json!({})),
            json!({"trafficsim.serin.dev/error-rate": "0", "trafficsim.serin.dev/latency-ms": "10"}),
        ),
    )
    .await;
    let s = wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(120)).await;
    let e = s.evidence.first().expect("the judge's evidence");
    eprintln!(
        "measured: nginx latency rolled back on {} canary requests: {}",
        e.canary_requests, e.message
    );
    assert_eq!(e.verdict, serin::statistics::Verdict::Fail, "{e:?}");
    assert!(e.latency.is_some(), "{e:?}");
    assert_eq!(s.failed_checks, 0, "the fixed check never failed");
    assert_eq!(canary_weight(&client, &ns).await, Some(0));
}

#[tokio::test]
async fn ab_sends_the_requests_with_the_header_to_the_canary_ingress() {
    let analysis = json!({"interval": "2s", "iterations": 6,
        "match": [{"headers": {"x-canary": {"exact": "insider"}}}]});
    let mix = json!([{"share": 0.25, "headers": {"x-canary": "insider"}}]);
    let (client, ns, _serin) = start("nginx-ab", analysis, Some(mix)).await;
    roll_out(&client, &ns, "podinfo:2.0.0", 0.0).await;
    wait_for(
        "the canary Ingress to select the header",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let a = canary_ingress(&client, &ns)
                .await
                .and_then(|i| i.metadata.annotations)
                .unwrap_or_default();
            if a.get("nginx.ingress.kubernetes.io/canary-by-header")
                .map(String::as_str)
                == Some("x-canary")
            {
                Ok(())
            } else {
                Err(format!("{a:?}"))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let share = prometheus_value(&canary_share(&ns))
        .await
        .expect("the canary's share");
    eprintln!("measured: nginx A/B canary share {share:.1}% (25% of requests match)");
    assert!(
        (share - 25.0).abs() <= 6.0,
        "the canary got {share:.1}% of requests; 25% carry the header"
    );
    wait_promoted(&client, &ns, "podinfo:2.0.0", Duration::from_secs(60)).await;
    let a = canary_ingress(&client, &ns)
        .await
        .and_then(|i| i.metadata.annotations)
        .unwrap_or_default();
    assert!(
        !a.contains_key("nginx.ingress.kubernetes.io/canary-by-header"),
        "the header match is gone after promotion: {a:?}"
    );
    assert_eq!(
        a.get("nginx.ingress.kubernetes.io/canary-weight")
            .map(String::as_str),
        Some("0")
    );
}

/// Requests through the user's Ingress, as the simulator counted them, answered with `codes`
/// (a PromQL matcher such as `="200"`); empty when no such request was ever counted.
async fn answered(ns: &str, codes: &str) -> Vec<f64> {
    prometheus_query(&format!(
        r#"sum(trafficsim_requests_total{{namespace="{ns}", code{codes}}})"#
    ))
    .await
    .expect("Prometheus answers")
}

/// Defect 12 ("Trust the core"): an app serving through its Ingress when its Canary arrives never goes
/// without endpoints. The user's Service selected podinfo's pods; Serin used to take it over on its first
/// tick, while podinfo-primary's pods were still starting (8 s here, kwok's ready delay), and every request
/// through the Ingress found no endpoint until they were ready.
#[tokio::test]
async fn an_app_serving_through_its_ingress_is_adopted_without_a_failed_request() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "adopt").await;
    let mut slow = serin_e2e::rollout::behaviour(0.0);
    slow["pod-ready.stage.kwok.x-k8s.io/delay"] = json!("8s");
    apply::<Deployment>(
        &client,
        &ns,
        annotated(
            serin_e2e::podinfo::deployment("podinfo:1.0.0", json!({})),
            slow,
        ),
    )
    .await;
    apply::<Service>(&client, &ns, serin_e2e::apps::service("podinfo")).await;
    serin_e2e::apps::wait_rolled_out(&client, &ns, "podinfo", 3).await;
    apply::<Ingress>(&client, &ns, json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "podinfo", "annotations": {"trafficsim.serin.dev/rps": "100"}},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "app.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}}]}}]}}))
    .await;
    wait_for(
        "requests through the user's Ingress",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            match answered(&ns, r#"="200""#).await.first() {
                Some(n) if *n > 0.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    apply::<Canary>(&client, &ns, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": "nginx", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
            "service": {"port": 9898}, "analysis": {"interval": "1s", "stepWeight": 50}}}))
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    // While the primary's pods start, the user's Service still selects the target's.
    let mut looked_while_starting = 0;
    loop {
        let primary = deployments.get_opt("podinfo-primary").await.unwrap();
        let ready = primary
            .as_ref()
            .and_then(|p| p.status.as_ref()?.available_replicas)
            .unwrap_or(0);
        if primary.is_some() && ready == 3 {
            break;
        }
        if primary.is_some() {
            let apex = services.get("podinfo").await.unwrap();
            let selector = json!(apex.spec.and_then(|s| s.selector));
            assert_eq!(
                selector,
                json!({"app": "podinfo"}),
                "the Service was taken over with {ready} of podinfo-primary's 3 pods ready"
            );
            looked_while_starting += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        looked_while_starting >= 10,
        "podinfo-primary started too fast to show anything ({looked_while_starting} looks)"
    );
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    let apex = services.get("podinfo").await.unwrap();
    assert_eq!(
        json!(apex.spec.and_then(|s| s.selector)),
        json!({"app": "podinfo-primary"})
    );
    serin_e2e::podinfo::target_at_zero(&deployments, "podinfo scaled to zero").await;

    // Prometheus has scraped past the switch and the scale-down: 3 s more of requests were counted.
    let served = answered(&ns, r#"="200""#).await[0];
    let total = wait_for(
        "Prometheus to count 3 s of requests after the scale-down",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            match answered(&ns, r#"="200""#).await.first() {
                Some(n) if *n >= served + 300.0 => Ok(*n),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let failed = answered(&ns, r#"!="200""#).await;
    eprintln!(
        "measured: adoption through the Ingress: {total} requests answered 200, others {failed:?}"
    );
    assert!(
        failed.iter().all(|n| *n == 0.0),
        "requests failed while the app was adopted: {failed:?}"
    );
}
