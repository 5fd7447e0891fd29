//! The test world itself, against the local cluster: Deployments really roll out on kwok nodes through the
//! real kube-controller-manager and scheduler, and the traffic simulator's series reach Prometheus split by
//! the weights in an HTTPRoute.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use serin_e2e::apps::{deployment, service, wait_rolled_out};
use serin_e2e::{apply, apply_httproute, client, namespace, prometheus_value, wait_for};

async fn pods_of(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("listing pods")
        .items
}

#[tokio::test]
async fn deployment_of_three_becomes_available_on_kwok_nodes() {
    let client = client().await;
    let ns = namespace(&client, "world-deploy").await;
    apply::<Deployment>(
        &client,
        &ns,
        deployment(
            "podinfo",
            3,
            "ghcr.io/stefanprodan/podinfo:6.0.0",
            json!({}),
        ),
    )
    .await;
    let d = wait_rolled_out(&client, &ns, "podinfo", 3).await;
    let available = d.status.unwrap().conditions.unwrap_or_default();
    assert!(
        available
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True"),
        "{available:?}"
    );

    let kwok_nodes: Vec<String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(kwok_nodes.len(), 3, "{kwok_nodes:?}");
    let pods = pods_of(&client, &ns, "podinfo").await;
    assert_eq!(pods.len(), 3);
    for p in &pods {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(
            kwok_nodes.contains(&node),
            "pod {} on {node:?}",
            p.name_any()
        );
        let status = p.status.clone().unwrap_or_default();
        assert_eq!(
            status.phase.as_deref(),
            Some("Running"),
            "pod {}",
            p.name_any()
        );
        assert!(
            status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
    }
}

#[tokio::test]
async fn image_update_rolls_out_a_new_replicaset() {
    let client = client().await;
    let ns = namespace(&client, "world-rollout").await;
    apply::<Deployment>(
        &client,
        &ns,
        deployment("podinfo", 3, "podinfo:1.0.0", json!({})),
    )
    .await;
    wait_rolled_out(&client, &ns, "podinfo", 3).await;
    apply::<Deployment>(
        &client,
        &ns,
        deployment("podinfo", 3, "podinfo:2.0.0", json!({})),
    )
    .await;
    let d = wait_rolled_out(&client, &ns, "podinfo", 3).await;
    assert_eq!(d.metadata.generation, Some(2));

    let image_of = |rs: &ReplicaSet| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.containers[0].image.clone().unwrap_or_default())
    };
    let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("app=podinfo"))
        .await
        .unwrap()
        .items;
    assert_eq!(replica_sets.len(), 2, "one ReplicaSet per revision");
    for rs in &replica_sets {
        let want = if image_of(rs).as_deref() == Some("podinfo:2.0.0") {
            3
        } else {
            0
        };
        assert_eq!(
            rs.spec.as_ref().and_then(|s| s.replicas),
            Some(want),
            "ReplicaSet {} ({:?})",
            rs.name_any(),
            image_of(rs)
        );
    }
    // The old pods are gone (kwok deletes them at once), the new ones run the new image.
    let pods = wait_for(
        "old pods to go",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let pods = pods_of(&client, &ns, "podinfo").await;
            if pods.len() == 3 {
                Ok(pods)
            } else {
                Err(format!("{} pods", pods.len()))
            }
        },
    )
    .await;
    for p in pods {
        assert_eq!(
            p.spec.unwrap().containers[0].image.as_deref(),
            Some("podinfo:2.0.0")
        );
    }
}

/// Runs `expr` once enough traffic is in Prometheus: `total` (a request count over the window) must reach
/// `at_least` first, so the ratio is measured over a full window, not its ramp.
async fn measure(what: &str, total: &str, at_least: f64, expr: &str) -> f64 {
    wait_for(
        &format!("{what}: {total} >= {at_least}"),
        Duration::from_secs(90),
        Duration::from_secs(1),
        || async {
            let n = prometheus_value(total).await?;
            if n >= at_least {
                Ok(())
            } else {
                Err(format!("{total} = {n}"))
            }
        },
    )
    .await;
    prometheus_value(expr)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test]
async fn httproute_weights_split_traffic_as_prometheus_sees() {
    let client = client().await;
    let ns = namespace(&client, "world-split").await;
    for name in ["stable", "preview"] {
        apply::<Deployment>(
            &client,
            &ns,
            deployment(name, 2, "podinfo:1.0.0", json!({})),
        )
        .await;
        apply::<Service>(&client, &ns, service(name)).await;
    }
    for name in ["stable", "preview"] {
        wait_rolled_out(&client, &ns, name, 2).await;
    }
    apply_httproute(
        &client,
        &ns,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "app", "annotations": {"trafficsim.serin.dev/rps": "100"}},
            "spec": {"rules": [{"backendRefs": [
                {"name": "stable", "port": 9898, "weight": 90},
                {"name": "preview", "port": 9898, "weight": 10}
            ]}]}
        }),
    )
    .await;

    let all = format!(
        r#"sum(increase(http_request_duration_seconds_count{{kubernetes_namespace="{ns}"}}[30s]))"#
    );
    let preview = format!(
        r#"sum(increase(http_request_duration_seconds_count{{kubernetes_namespace="{ns}",kubernetes_pod_name=~"preview-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}}[30s]))"#
    );
    // 30s at 100 rps is 3000 requests; wait for most of a window.
    let share = measure(
        "preview's share",
        &all,
        2500.0,
        &format!("{preview} / {all} * 100"),
    )
    .await;
    assert!(
        (share - 10.0).abs() <= 3.0,
        "preview got {share:.2}% of requests; the route says 10%"
    );
}

#[tokio::test]
async fn error_rate_annotation_shows_as_success_rate() {
    let client = client().await;
    let ns = namespace(&client, "world-errors").await;
    let behaviour =
        json!({"trafficsim.serin.dev/error-rate": "0.2", "trafficsim.serin.dev/latency-ms": "50"});
    apply::<Deployment>(
        &client,
        &ns,
        deployment("flaky", 2, "podinfo:1.0.0", behaviour),
    )
    .await;
    apply::<Service>(&client, &ns, service("flaky")).await;
    wait_rolled_out(&client, &ns, "flaky", 2).await;
    apply_httproute(
        &client,
        &ns,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "flaky", "annotations": {"trafficsim.serin.dev/rps": "200"}},
            "spec": {"rules": [{"backendRefs": [{"name": "flaky", "port": 9898}]}]}
        }),
    )
    .await;

    // podinfo-style series, as the gatewayapi and kubernetes providers' built-in query reads them.
    let sel = format!(
        r#"kubernetes_namespace="{ns}",kubernetes_pod_name=~"flaky-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)""#
    );
    let all = format!("sum(increase(http_request_duration_seconds_count{{{sel}}}[30s]))");
    let ok = format!(
        r#"sum(increase(http_request_duration_seconds_count{{{sel},status!~"5.*"}}[30s]))"#
    );
    let rate = measure("success rate", &all, 5000.0, &format!("{ok} / {all} * 100")).await;
    assert!(
        (rate - 80.0).abs() <= 3.0,
        "success rate {rate:.2}%, pods declare an error rate of 20%"
    );

    // Istio-style series of the same traffic, by workload.
    let sel = format!(
        r#"reporter="destination",destination_workload_namespace="{ns}",destination_workload=~"flaky""#
    );
    let all = format!("sum(rate(istio_requests_total{{{sel}}}[30s]))");
    let ok = format!(r#"sum(rate(istio_requests_total{{{sel},response_code!~"5.*"}}[30s]))"#);
    let rate = prometheus_value(&format!("{ok} / {all} * 100"))
        .await
        .expect("istio success rate");
    assert!((rate - 80.0).abs() <= 3.0, "istio success rate {rate:.2}%");
    let p99 = prometheus_value(&format!(
        "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[30s])) by (le))"
    ))
    .await
    .expect("istio p99");
    // Latency 50ms +-20% lies in the (50, 100] bucket, within which Prometheus interpolates.
    assert!((50.0..=100.0).contains(&p99), "p99 {p99}ms");
}
