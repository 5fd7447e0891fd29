//! Blue/green and A/B end to end: the `serin` binary against the local cluster, with the traffic simulator
//! and Prometheus showing where requests really go.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin_e2e::{
    SerinProcess, annotate, apply, client, httproute_resource, install_crds, namespace,
    prometheus_value, wait_for,
};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

fn deployment(image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {"metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{"name": "podinfo", "image": image}]}}}})
}

async fn start(prefix: &str, provider: &str, analysis: Value) -> (Client, String, SerinProcess) {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:1")).await;
    apply::<Canary>(&client, &ns, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": provider, "targetRef": {"name": "podinfo"}, "service": {"port": 9898}, "analysis": analysis}}))
    .await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized).await;
    (client, ns, serin)
}

async fn phase(client: &Client, ns: &str) -> Option<Phase> {
    Api::<Canary>::namespaced(client.clone(), ns)
        .get("podinfo")
        .await
        .ok()
        .and_then(|c| c.status)
        .and_then(|s| s.phase)
}

async fn wait_phase(client: &Client, ns: &str, want: Phase) {
    wait_for(
        &format!("{ns}/podinfo {want}"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            match phase(client, ns).await {
                Some(p) if p == want => Ok(()),
                p => Err(format!("{p:?}")),
            }
        },
    )
    .await;
}

async fn route(client: &Client, ns: &str) -> Option<DynamicObject> {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &httproute_resource())
        .get_opt("podinfo")
        .await
        .ok()
        .flatten()
}

async fn primary_image(client: &Client, ns: &str) -> String {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("podinfo-primary")
        .await
        .unwrap();
    d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn ab_testing_sends_the_matching_requests_to_the_canary() {
    let analysis = json!({"interval": "2s", "iterations": 6, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]});
    let (client, ns, _serin) = start("ab", "gatewayapi", analysis).await;
    // A quarter of the simulated requests carry the header (annotations of the simulator's, under a field
    // manager of our own: Serin owns only the fields it sets).
    let mix = json!([{"share": 0.25, "headers": {"x-canary": "insider"}}]).to_string();
    annotate(
        &client,
        &ns,
        &httproute_resource(),
        "podinfo",
        json!({"trafficsim.serin.dev/request-mix": mix, "trafficsim.serin.dev/rps": "200"}),
    )
    .await;

    apply::<Deployment>(&client, &ns, deployment("podinfo:2")).await;
    wait_for(
        "the route to match requests to the canary",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let r = route(&client, &ns).await.ok_or("no route")?;
            let matches = &r.data["spec"]["rules"][0]["matches"];
            if matches[0]["headers"][0]["value"] == "insider" {
                Ok(())
            } else {
                Err(r.data["spec"].to_string())
            }
        },
    )
    .await;
    // Five seconds of matched traffic in Prometheus (scraped every second), then measure the split.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let sel = |pods: &str| format!(r#"kubernetes_namespace="{ns}",kubernetes_pod_name=~"{pods}""#);
    let canary = format!(
        "sum(increase(http_request_duration_seconds_count{{{}}}[5s]))",
        sel("podinfo-[0-9a-z]+-[0-9a-z]+")
    );
    let all = format!(
        "sum(increase(http_request_duration_seconds_count{{{}}}[5s]))",
        sel("podinfo-.*")
    );
    let share = prometheus_value(&format!("{canary} / {all} * 100"))
        .await
        .expect("the canary's share");
    eprintln!("measured: A/B canary share {share:.1}% (25% of requests match)");
    assert!(
        (share - 25.0).abs() <= 6.0,
        "the canary got {share:.1}% of requests; 25% carry the header"
    );
    assert_eq!(phase(&client, &ns).await, Some(Phase::Progressing));

    wait_phase(&client, &ns, Phase::Succeeded).await;
    assert_eq!(primary_image(&client, &ns).await, "podinfo:2");
    let r = route(&client, &ns).await.unwrap();
    let rules = r.data["spec"]["rules"].as_array().unwrap();
    assert_eq!(
        rules.len(),
        1,
        "the match rule is gone after promotion: {rules:?}"
    );
    assert_eq!(rules[0]["backendRefs"][1]["weight"], 0);
}

#[tokio::test]
async fn blue_green_moves_all_traffic_at_once_after_the_iterations() {
    let (client, ns, _serin) = start(
        "bluegreen",
        "gatewayapi",
        json!({"interval": "1s", "iterations": 3}),
    )
    .await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:2")).await;
    let canary_weight = |r: Option<DynamicObject>| {
        r.and_then(|r| r.data["spec"]["rules"][0]["backendRefs"][1]["weight"].as_i64())
    };
    let mut weights: Vec<i64> = Vec::new();
    for _ in 0..600 {
        let done = phase(&client, &ns).await == Some(Phase::Succeeded);
        if let Some(w) = canary_weight(route(&client, &ns).await)
            && weights.last() != Some(&w)
        {
            weights.push(w);
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(weights, vec![0, 100, 0]);
    assert_eq!(primary_image(&client, &ns).await, "podinfo:2");
}

#[tokio::test]
async fn provider_kubernetes_promotes_without_a_route() {
    let (client, ns, _serin) = start(
        "k8s-provider",
        "kubernetes",
        json!({"interval": "1s", "iterations": 2}),
    )
    .await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:2")).await;
    wait_phase(&client, &ns, Phase::Succeeded).await;
    assert_eq!(primary_image(&client, &ns).await, "podinfo:2");
    assert!(
        route(&client, &ns).await.is_none(),
        "provider kubernetes makes no HTTPRoute"
    );
}

/// Session affinity through an HTTPRoute: 40 clients keeping their cookies; a client the split sent to
/// the canary stays there while the analysis holds at weight 20, and the canary is promoted.
#[tokio::test]
async fn session_affinity_keeps_the_users_who_reached_the_canary_on_it() {
    let analysis = json!({"interval": "2s", "stepWeight": 20, "maxWeight": 40,
        "sessionAffinity": {"cookieName": "canary", "primaryCookieName": "primary"}});
    let (client, ns, _serin) = start("sticky-gw", "gatewayapi", analysis).await;
    annotate(
        &client,
        &ns,
        &httproute_resource(),
        "podinfo",
        json!({"trafficsim.serin.dev/rps": "100", "trafficsim.serin.dev/clients": "40"}),
    )
    .await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:2")).await;
    wait_for(
        "the route at weight 20 with its cookie rules",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let r = route(&client, &ns).await.ok_or("no route")?;
            let rules = r.data["spec"]["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            match rules.last() {
                Some(split) if rules.len() == 3 && split["backendRefs"][1]["weight"] == 20 => {
                    Ok(())
                }
                _ => Err(r.data["spec"].to_string()),
            }
        },
    )
    .await;
    serin_e2e::podinfo::annotate_canary(&client, &ns, "serin.dev/pause", Some("true")).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let switches = |from: &'static str, to: &'static str| {
        let ns = ns.clone();
        async move {
            serin_e2e::prometheus_query(&format!(
                r#"sum(trafficsim_client_switches_total{{namespace="{ns}", route="podinfo", from="{from}", to="{to}"}})"#
            ))
            .await
            .expect("Prometheus answers")
        }
    };
    let to_canary = switches("podinfo-primary", "podinfo-canary").await;
    let back = switches("podinfo-canary", "podinfo-primary").await;
    eprintln!(
        "measured: gatewayapi session affinity at weight 20: clients switched to the canary {to_canary:?}, back {back:?}"
    );
    assert!(to_canary.first().is_some_and(|n| *n > 0.0), "{to_canary:?}");
    assert!(back.is_empty(), "a client left the canary: {back:?}");
    serin_e2e::podinfo::annotate_canary(&client, &ns, "serin.dev/pause", Some("false")).await;
    wait_phase(&client, &ns, Phase::Succeeded).await;
    assert_eq!(primary_image(&client, &ns).await, "podinfo:2");
}
