//! Gateway API beyond the HTTPRoute at v1: a gRPC service stepped through a GRPCRoute
//! (`service.routeKind: GRPCRoute`), and provider `gatewayapi:v1beta1` writing its HTTPRoute at v1beta1.
//! The traffic simulator splits requests by each route, and the pods' series show the canary's share.

use std::time::Duration;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin_e2e::podinfo::{wait_phase, wait_promoted};
use serin_e2e::rollout::{
    WeightRecorder, hold_and_measure, mirrored_faulty_rolled_back, resume, roll_out, wait_weight,
};
use serin_e2e::{SerinProcess, annotate, apply, client, install_crds, namespace};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

fn routes(version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", version, kind),
        plural,
    )
}

async fn start(prefix: &str, provider: &str, service: Value) -> (Client, String, SerinProcess) {
    start_with(
        prefix,
        provider,
        service,
        json!({"interval": "2s", "stepWeight": 25, "maxWeight": 50, "threshold": 1}),
    )
    .await
}

/// `start` with `analysis` (and the request-success-rate check).
async fn start_with(
    prefix: &str,
    provider: &str,
    service: Value,
    mut analysis: Value,
) -> (Client, String, SerinProcess) {
    analysis["metrics"] =
        json!([{"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}}]);
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    roll_out(&client, &ns, "podinfo:1.0.0", 0.0).await;
    let mut svc = json!({"port": 9898, "gatewayRefs": [{"name": "gateway"}]});
    if let (Some(s), Some(extra)) = (svc.as_object_mut(), service.as_object()) {
        s.extend(extra.clone());
    }
    apply::<Canary>(&client, &ns, json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": provider, "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": svc, "analysis": analysis}}))
    .await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    (client, ns, serin)
}

async fn route(client: &Client, ns: &str, ar: &ApiResource) -> Option<DynamicObject> {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, ar)
        .get_opt("podinfo")
        .await
        .ok()
        .flatten()
}

/// The canary's weight in the route's catch-all rule (its last), as a gateway would read it.
async fn canary_weight(client: &Client, ns: &str, ar: &ApiResource) -> Option<i64> {
    let r = route(client, ns, ar).await?;
    r.data["spec"]["rules"].as_array()?.last()?["backendRefs"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == "podinfo-canary")
        .and_then(|b| b["weight"].as_i64())
}

/// The canary pods' share of the requests the pods served over the last 5 s, in percent.
fn canary_share(ns: &str) -> String {
    let sel = |pods: &str| format!(r#"kubernetes_namespace="{ns}",kubernetes_pod_name=~"{pods}""#);
    format!(
        "sum(increase(http_request_duration_seconds_count{{{}}}[5s])) / sum(increase(http_request_duration_seconds_count{{{}}}[5s])) * 100",
        sel("podinfo-[0-9a-z]+-[0-9a-z]+"),
        sel("podinfo-.*")
    )
}

/// Steps podinfo 2.0.0 through `ar`'s route: 0, 25 (held and measured), 50, promoted, 0.
async fn steps_and_promotes(client: &Client, ns: &str, ar: &ApiResource, what: &str) {
    annotate(
        client,
        ns,
        ar,
        "podinfo",
        json!({"trafficsim.serin.dev/rps": "100"}),
    )
    .await;
    let recorder = {
        let (client, ns, ar) = (client.clone(), ns.to_string(), ar.clone());
        WeightRecorder::start(move || {
            let (client, ns, ar) = (client.clone(), ns.clone(), ar.clone());
            async move { canary_weight(&client, &ns, &ar).await }
        })
    };
    roll_out(client, ns, "podinfo:2.0.0", 0.0).await;
    wait_weight(what, 25, || canary_weight(client, ns, ar)).await;
    let share = hold_and_measure(client, ns, &canary_share(ns)).await;
    eprintln!("measured: {what}: canary share {share:.1}% at weight 25");
    assert!((share - 25.0).abs() <= 6.0, "the canary got {share:.1}%");
    resume(client, ns).await;
    wait_promoted(client, ns, "podinfo:2.0.0", Duration::from_secs(60)).await;
    assert_eq!(recorder.stop().await, [0, 25, 50, 0]);
}

#[tokio::test]
async fn a_grpc_service_steps_through_a_grpc_route() {
    let (client, ns, _serin) =
        start("grpcroute", "gatewayapi", json!({"routeKind": "GRPCRoute"})).await;
    let grpc = routes("v1", "GRPCRoute", "grpcroutes");
    let r = route(&client, &ns, &grpc)
        .await
        .expect("Serin made a GRPCRoute");
    assert_eq!(r.data["spec"]["parentRefs"][0]["name"], "gateway");
    assert!(
        route(&client, &ns, &routes("v1", "HTTPRoute", "httproutes"))
            .await
            .is_none(),
        "no HTTPRoute beside it"
    );
    steps_and_promotes(&client, &ns, &grpc, "the GRPCRoute").await;
}

#[tokio::test]
async fn provider_gatewayapi_v1beta1_writes_its_http_route_at_v1beta1() {
    let (client, ns, _serin) = start("gwv1beta1", "gatewayapi:v1beta1", json!({})).await;
    let v1beta1 = routes("v1beta1", "HTTPRoute", "httproutes");
    let r = route(&client, &ns, &v1beta1)
        .await
        .expect("Serin made the HTTPRoute");
    let serins = r
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("serin"))
        .expect("Serin's managed fields");
    assert_eq!(
        serins.api_version.as_deref(),
        Some("gateway.networking.k8s.io/v1beta1")
    );
    steps_and_promotes(&client, &ns, &v1beta1, "the v1beta1 HTTPRoute").await;
}

/// Mirroring through an HTTPRoute's RequestMirror filter: a revision failing half its requests gets half
/// the copies (mirrorWeight 50), is rolled back on their errors, and no user request reaches it.
#[tokio::test]
async fn mirroring_through_an_http_route_keeps_the_canarys_errors_from_users() {
    let (client, ns, _serin) = start_with(
        "gw-mirror",
        "gatewayapi",
        json!({}),
        json!({"interval": "2s", "iterations": 3, "threshold": 1, "mirror": true, "mirrorWeight": 50}),
    )
    .await;
    let http = routes("v1", "HTTPRoute", "httproutes");
    annotate(
        &client,
        &ns,
        &http,
        "podinfo",
        json!({"trafficsim.serin.dev/rps": "100"}),
    )
    .await;
    let (copies_failed, users) = mirrored_faulty_rolled_back(&client, &ns, "podinfo", || async {
        route(&client, &ns, &http).await.is_some_and(|r| {
            r.data["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"] == 50
        })
    })
    .await;
    eprintln!(
        "measured: gatewayapi mirroring: {copies_failed} failed copies at the canary, 0 of {users} user requests failed"
    );
    let r = route(&client, &ns, &http).await.unwrap();
    assert!(
        r.data["spec"]["rules"][0].get("filters").is_none(),
        "the mirror is gone after the rollback: {}",
        r.data["spec"]
    );
}
