//! The defects of "Trust the core" where the API server's behaviour matters, proven against the local
//! cluster: what the server stores is what Serin reads back.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use serin::api::{Canary, Phase};
use serin::routing::Router;
use serin::routing::gatewayapi;
use serin::vocabulary::{Traffic, Weights};
use serin_e2e::podinfo::{deployment, route_weight, setup, status, wait_phase, weights_until};
use serin_e2e::{SerinProcess, apply, apply_httproute, client, install_crds, namespace, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// Defect 9: the API server fills in a `/` path prefix (and backend defaults); the router reads the
/// weights back from the route as stored, not from a shape only Serin writes.
#[tokio::test]
async fn the_route_is_read_back_as_the_api_server_stores_it() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "safety-route").await;
    let canary: Canary = serde_json::from_value(json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": ns, "uid": "6a1f0c52-0000-4000-8000-000000000001"},
        "spec": {"targetRef": {"name": "podinfo"}, "service": {"port": 9898, "gatewayRefs": [{"name": "gateway"}]},
            "analysis": {"iterations": 2, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}}
    }))
    .unwrap();
    for traffic in [Traffic::Split(Weights::canary(20)), Traffic::Matched] {
        let mut route = gatewayapi::V1.desired(&canary, traffic).unwrap().remove(0);
        // No owner: the Canary is not in the cluster.
        route.metadata.owner_references = None;
        let mut object = serde_json::to_value(&route).unwrap();
        object["apiVersion"] = json!("gateway.networking.k8s.io/v1");
        object["kind"] = json!("HTTPRoute");
        let stored = apply_httproute(&client, &ns, object).await;
        let rules = &stored.data["spec"]["rules"];
        let split_rule = &rules[rules.as_array().unwrap().len() - 1];
        assert_eq!(
            split_rule["matches"],
            json!([{"path": {"type": "PathPrefix", "value": "/"}}]),
            "the server's default, which the unit tests' world (as_stored) reproduces"
        );
        assert_eq!(split_rule["backendRefs"][0]["kind"], "Service");
        assert_eq!(
            gatewayapi::V1.traffic(&canary, &stored),
            Some(traffic),
            "{}",
            stored.data["spec"]
        );
    }
}

/// Defect 9, end to end: the controller dies after writing the route and before writing the status (the
/// status says 30, the route 20). The restarted controller believes the route: the next step is 30.
#[tokio::test]
async fn a_restart_resumes_from_the_weight_in_the_route_not_the_status() {
    let (client, ns) = setup(
        "safety-resume",
        json!({"interval": "4s", "stepWeight": 10, "maxWeight": 50}),
        json!({}),
    )
    .await;
    let mut serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:2.0.0", json!({}))).await;
    wait_for(
        "route weight 20",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            match route_weight(&client, &ns).await {
                Some(20) => Ok(()),
                w => Err(format!("{w:?}")),
            }
        },
    )
    .await;
    serin.kill();
    let canaries: Api<Canary> = Api::namespaced(client.clone(), &ns);
    canaries
        .patch_status(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"canaryWeight": 30}})),
        )
        .await
        .unwrap();
    assert_eq!(status(&client, &ns).await.canary_weight, 30);
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    let weights = weights_until(&client, &ns, Phase::Succeeded, Duration::from_secs(90)).await;
    assert_eq!(
        weights,
        vec![20, 30, 40, 50, 0],
        "no step skipped, none repeated"
    );
}

/// Defect 11: another field manager (Flux's kustomize-controller, say) applies the target's replicas
/// with force. Serin sets them back once per change, not in a loop.
#[tokio::test]
async fn a_second_manager_applying_replicas_does_not_fight_serin_in_a_loop() {
    let (client, ns) = setup(
        "safety-replicas",
        json!({"interval": "1s", "stepWeight": 50}),
        json!({}),
    )
    .await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    serin_e2e::podinfo::target_at_zero(&deployments, "target at 0").await;
    let patches = || async {
        serin
            .metric_where(
                "serin_api_requests_total",
                &[r#"verb="patch""#, r#"resource="deployments""#],
            )
            .await
            .unwrap_or(0.0)
    };
    let before = patches().await;
    for _ in 0..3 {
        let flux = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo"},
            "spec": {"replicas": 3}});
        deployments
            .patch(
                "podinfo",
                &PatchParams::apply("kustomize-controller").force(),
                &Patch::Apply(&flux),
            )
            .await
            .unwrap();
        serin_e2e::podinfo::target_at_zero(&deployments, "Serin to scale the target back to 0")
            .await;
    }
    // Quiet for a while: nobody writes replicas again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = patches().await - before;
    assert_eq!(writes, 3.0, "one write of Serin's per foreign apply");
    let target = deployments.get("podinfo").await.unwrap();
    let managers: Vec<String> = target
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"serin".to_string()), "{managers:?}");
    assert_eq!(status(&client, &ns).await.phase, Some(Phase::Initialized));
}

/// Defect 11: a deleted Canary's series leave /metrics (no reconcile ever sees it again).
#[tokio::test]
async fn a_deleted_canary_leaves_no_series_on_metrics() {
    let (client, ns) = setup(
        "safety-series",
        json!({"interval": "1s", "stepWeight": 50}),
        json!({}),
    )
    .await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    let series = |serin: &SerinProcess| {
        let ns = ns.clone();
        let url = serin.metrics_url.clone();
        async move {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            text.lines()
                .filter(|l| {
                    l.contains(&format!(r#"namespace="{ns}""#)) && l.starts_with("serin_canary_")
                })
                .count()
        }
    };
    assert!(series(&serin).await > 0);
    Api::<Canary>::namespaced(client.clone(), &ns)
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    wait_for(
        "no series for the deleted Canary",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            match series(&serin).await {
                0 => Ok(()),
                n => Err(format!("{n} series")),
            }
        },
    )
    .await;
}

/// Optional kinds are watched only where the cluster serves them: discovery against the real API server
/// tells a served CRD (Istio's, in the test world), a built-in group (autoscaling/v2) and a group no one
/// serves apart, so Serin does not retry a watch that can never start.
#[tokio::test]
async fn discovery_tells_which_optional_kinds_the_cluster_serves() {
    use kube::api::ApiResource;
    use kube::core::GroupVersionKind;
    use serin::controller::discovery::served;
    let client = client().await;
    assert!(served(&client, &serin::routing::istio::virtual_services()).await);
    assert!(served(&client, &serin::routing::istio::destination_rules()).await);
    let hpa = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("autoscaling", "v2", "HorizontalPodAutoscaler"),
        "horizontalpodautoscalers",
    );
    assert!(served(&client, &hpa).await);
    let nowhere = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.invalid", "v1", "Thing"),
        "things",
    );
    assert!(!served(&client, &nowhere).await);
    // A served group version without the resource.
    let missing = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "Gateway"),
        "gateways",
    );
    assert!(!served(&client, &missing).await);
}
