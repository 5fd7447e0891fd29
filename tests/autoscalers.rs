//! autoscalerRef, end to end: the primary gets its own HorizontalPodAutoscaler (which the real
//! kube-controller-manager acts on) or KEDA ScaledObject, and the target's autoscaler keeps the canary:
//! Serin starts it from zero and never sets its replicas against it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin_e2e::podinfo::{canary, deployment, image_of, status, wait_phase};
use serin_e2e::{SerinProcess, apply, client, install_crds, namespace, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// podinfo at `image` without `replicas`, as an autoscaled Deployment is kept in git (a GitOps apply of
/// replicas would otherwise take them back from the autoscaler, and from Serin).
fn autoscaled(image: &str) -> Value {
    let mut d = deployment(image, json!({}));
    d["spec"].as_object_mut().unwrap().remove("replicas");
    d
}

async fn replicas(client: &Client, ns: &str, name: &str) -> i32 {
    image_of(client, ns, name).await.1
}

async fn wait_replicas(client: &Client, ns: &str, name: &str, want: i32) {
    wait_for(
        &format!("{name} at {want} replicas"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            match replicas(client, ns, name).await {
                n if n == want => Ok(()),
                n => Err(format!("{n}")),
            }
        },
    )
    .await;
}

/// podinfo 1.0.0, its autoscaler `scaler` (of kind `ar`), and a Canary with this autoscalerRef.
async fn setup(
    prefix: &str,
    ar: ApiResource,
    scaler: Value,
    autoscaler_ref: Value,
) -> (Client, String) {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    apply::<Deployment>(&client, &ns, autoscaled("podinfo:1.0.0")).await;
    Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar)
        .patch(
            scaler["metadata"]["name"].as_str().unwrap(),
            &PatchParams::apply("serin-e2e").force(),
            &Patch::Apply(&scaler),
        )
        .await
        .unwrap();
    apply::<Canary>(
        &client,
        &ns,
        canary(json!({"autoscalerRef": autoscaler_ref,
            "analysis": {"interval": "1s", "stepWeight": 5}})),
    )
    .await;
    (client, ns)
}

#[tokio::test]
async fn an_hpa_scaled_deployment_is_promoted_with_an_hpa_of_its_own_for_the_primary() {
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "podinfo"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}});
    let (client, ns) = setup(
        "hpa",
        ApiResource::erase::<HorizontalPodAutoscaler>(&()),
        hpa,
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo",
            "primaryScalerReplicas": {"minReplicas": 4, "maxReplicas": 6}}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let primary_hpa = hpas
        .get("podinfo-primary")
        .await
        .expect("the primary's HPA");
    let spec = primary_hpa.spec.clone();
    assert_eq!(spec.scale_target_ref.name, "podinfo-primary");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(4), 6));
    assert_eq!(
        primary_hpa.metadata.owner_references.unwrap()[0].kind,
        "Canary"
    );
    // kube-controller-manager's HPA controller scales the primary to its HPA's minimum.
    wait_replicas(&client, &ns, "podinfo-primary", 4).await;
    wait_replicas(&client, &ns, "podinfo", 0).await;

    apply::<Deployment>(&client, &ns, autoscaled("podinfo:2.0.0")).await;
    wait_phase(&client, &ns, Phase::Progressing, Duration::from_secs(30)).await;
    // The canary starts at its HPA's minimum, not the primary's count.
    wait_replicas(&client, &ns, "podinfo", 2).await;
    // Its autoscaler scales it (as under load); Serin leaves that alone for the rest of the analysis.
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch_scale(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if status(&client, &ns).await.phase != Some(Phase::Progressing) {
            break;
        }
        assert_eq!(
            replicas(&client, &ns, "podinfo").await,
            3,
            "Serin set the canary's replicas against its autoscaler"
        );
    }
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(60)).await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:2.0.0"
    );
    wait_replicas(&client, &ns, "podinfo", 0).await;
    assert_eq!(replicas(&client, &ns, "podinfo-primary").await, 4);
    assert_eq!(
        hpas.get("podinfo")
            .await
            .unwrap()
            .spec
            .scale_target_ref
            .name,
        "podinfo",
        "the target's HPA is the user's, untouched"
    );
}

fn scaled_objects() -> ApiResource {
    ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "keda.sh",
        "v1alpha1",
        "ScaledObject",
    ))
}

async fn paused(client: &Client, ns: &str) -> Option<String> {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &scaled_objects())
        .get("podinfo-so")
        .await
        .unwrap()
        .metadata
        .annotations
        .and_then(|a| a.get("autoscaling.keda.sh/paused-replicas").cloned())
}

#[tokio::test]
async fn a_keda_scaled_deployment_is_promoted_with_a_scaled_object_of_its_own_for_the_primary() {
    let so = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "podinfo-so"},
        "spec": {"scaleTargetRef": {"name": "podinfo"}, "minReplicaCount": 2, "maxReplicaCount": 5,
            "triggers": [{"type": "prometheus", "name": "rps", "metadata": {"serverAddress": "http://prometheus:9090",
                "threshold": "100", "query": r#"sum(rate(http_requests_total{deployment="podinfo"}[1m]))"#}}]}});
    let (client, ns) = setup(
        "keda",
        scaled_objects(),
        so,
        json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "podinfo-so"}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    let primary = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &scaled_objects())
        .get("podinfo-so-primary")
        .await
        .expect("the primary's ScaledObject");
    assert_eq!(
        primary.data["spec"]["scaleTargetRef"],
        json!({"name": "podinfo-primary"})
    );
    assert_eq!(
        primary.data["spec"]["triggers"][0]["metadata"]["query"],
        r#"sum(rate(http_requests_total{deployment="podinfo-primary"}[1m]))"#
    );
    assert_eq!(primary.data["spec"]["minReplicaCount"], 2);
    // While the canary is at zero its ScaledObject is paused, or KEDA would start it again.
    wait_for(
        "the target's ScaledObject paused",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            match paused(&client, &ns).await {
                Some(p) if p == "0" => Ok(()),
                p => Err(format!("{p:?}")),
            }
        },
    )
    .await;
    wait_replicas(&client, &ns, "podinfo", 0).await;

    apply::<Deployment>(&client, &ns, autoscaled("podinfo:2.0.0")).await;
    wait_phase(&client, &ns, Phase::Progressing, Duration::from_secs(30)).await;
    wait_replicas(&client, &ns, "podinfo", 2).await;
    assert_eq!(
        paused(&client, &ns).await,
        None,
        "resumed while the canary runs"
    );
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(60)).await;
    wait_replicas(&client, &ns, "podinfo", 0).await;
    assert_eq!(paused(&client, &ns).await.as_deref(), Some("0"));
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        "podinfo:2.0.0"
    );
}
