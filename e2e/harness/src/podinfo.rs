//! A podinfo Deployment behind a Canary, as the end-to-end tests of the canary lifecycle set it up, and
//! what they read back: the Canary's status, the route's weights, the Deployments' images and replicas.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};
use serin::api::{Canary, CanaryStatus, Phase};

use crate::{apply, client, httproute_resource, install_crds, namespace, wait_for};

/// The podinfo Deployment (3 replicas) at `image`, with `pod_spec_extra` merged into its pod spec.
pub fn deployment(image: &str, pod_spec_extra: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "podinfo", "image": image, "ports": [{"name": "http", "containerPort": 9898}]}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), pod_spec_extra.as_object()) {
        s.extend(extra.clone());
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": spec}}})
}

/// `deployment` with these annotations on its pod template (the traffic simulator's error rate and
/// latency, say).
pub fn annotated(mut deployment: Value, annotations: Value) -> Value {
    deployment["spec"]["template"]["metadata"]["annotations"] = annotations;
    deployment
}

/// The Canary podinfo (provider gatewayapi), with `spec_extra` merged into its spec.
pub fn canary(spec_extra: Value) -> Value {
    let mut spec = json!({"provider": "gatewayapi", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898, "gatewayRefs": [{"name": "gateway"}]}});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        s.extend(extra.clone());
    }
    json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"}, "spec": spec})
}

pub async fn status(client: &Client, ns: &str) -> CanaryStatus {
    status_of(client, ns, "podinfo").await
}

/// The status of the Canary `name` (default while it has none, or is not there).
pub async fn status_of(client: &Client, ns: &str, name: &str) -> CanaryStatus {
    Api::<Canary>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()
        .and_then(|c| c.status)
        .unwrap_or_default()
}

pub async fn wait_phase(
    client: &Client,
    ns: &str,
    phase: Phase,
    timeout: Duration,
) -> CanaryStatus {
    wait_phase_of(client, ns, "podinfo", phase, timeout).await
}

/// Waits until the Canary `name` is in `phase`.
pub async fn wait_phase_of(
    client: &Client,
    ns: &str,
    name: &str,
    phase: Phase,
    timeout: Duration,
) -> CanaryStatus {
    wait_for(
        &format!("Canary {ns}/{name} to be {phase}"),
        timeout,
        Duration::from_millis(100),
        || async {
            let s = status_of(client, ns, name).await;
            if s.phase == Some(phase) {
                Ok(s)
            } else {
                Err(format!("{:?} weight {}", s.phase, s.canary_weight))
            }
        },
    )
    .await
}

/// The canary's weight in the Canary's route, as the data plane would read it: the HTTPRoute's catch-all
/// rule (its last), or with provider istio the VirtualService's split (its last HTTP route).
pub async fn route_weight(client: &Client, ns: &str) -> Option<i64> {
    let canary = Api::<Canary>::namespaced(client.clone(), ns)
        .get("podinfo")
        .await
        .ok()?;
    let istio = canary.spec.provider == Some(serin::api::Provider::Istio);
    let ar = if istio {
        serin::routing::istio::virtual_services()
    } else {
        httproute_resource()
    };
    let route = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .get("podinfo")
        .await
        .ok()?;
    let (rules, backends, name) = if istio {
        ("http", "route", "/destination/host")
    } else {
        ("rules", "backendRefs", "/name")
    };
    route.data["spec"][rules].as_array()?.last()?[backends]
        .as_array()?
        .iter()
        .find(|b| b.pointer(name) == Some(&serde_json::json!("podinfo-canary")))
        .map(|b| b["weight"].as_i64().unwrap_or(0))
}

pub async fn image_of(client: &Client, ns: &str, name: &str) -> (String, i32) {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("deployment");
    let spec = d.spec.unwrap();
    (
        spec.template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default(),
        spec.replicas.unwrap_or(0),
    )
}

/// The distinct weights a `record_weights` task has seen so far, and the task.
pub type Recording = (
    std::sync::Arc<std::sync::Mutex<Vec<i64>>>,
    tokio::task::JoinHandle<()>,
);

/// Records each distinct canary weight in the route until the Canary reaches `phase`.
pub async fn weights_until(client: &Client, ns: &str, phase: Phase, timeout: Duration) -> Vec<i64> {
    let recording = record_weights(client.clone(), ns.to_string());
    weights_recorded_until(client, ns, recording, phase, timeout).await
}

/// The weights `recording` (from `record_weights`, started before the change that moves the route) saw
/// until the Canary reached `phase`. A recording started after the target's update can miss the first
/// weight: Serin takes the first step within tens of milliseconds of seeing a ready canary.
pub async fn weights_recorded_until(
    client: &Client,
    ns: &str,
    (seen, recorder): Recording,
    phase: Phase,
    timeout: Duration,
) -> Vec<i64> {
    let start = Instant::now();
    loop {
        if status(client, ns).await.phase == Some(phase) {
            // One more look at the route: the last weight of the phase.
            tokio::time::sleep(Duration::from_millis(100)).await;
            recorder.abort();
            return seen.lock().unwrap().clone();
        }
        if start.elapsed() >= timeout {
            recorder.abort();
            panic!(
                "not {phase} after {timeout:?}; weights so far {:?}",
                seen.lock().unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `record_weights`, once it has seen the route's first weight: started before a change, it cannot miss the
/// weight the route held before it.
pub async fn recording_weights(client: Client, ns: String) -> Recording {
    let (seen, recorder) = record_weights(client, ns.clone());
    wait_for(
        &format!("the first weight of {ns}'s route"),
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            match seen.lock().unwrap().first() {
                Some(_) => Ok(()),
                None => Err("not read yet".to_string()),
            }
        },
    )
    .await;
    (seen, recorder)
}

/// Records each distinct canary weight the route holds, as a data plane would see it, until stopped.
pub fn record_weights(client: Client, ns: String) -> Recording {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            // A read on a connection the API server dropped (a fault test restarts it) could hang for
            // minutes: bounded, so no weight goes unseen.
            let read = tokio::time::timeout(Duration::from_millis(500), route_weight(&client, &ns));
            if let Ok(Some(w)) = read.await {
                let mut log = log.lock().unwrap();
                if log.last() != Some(&w) {
                    log.push(w);
                }
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    (seen, task)
}

/// A namespace of its own with podinfo 1.0.0 and its Canary (`analysis`, and `extra` merged into the spec).
pub async fn setup(prefix: &str, analysis: Value, extra: Value) -> (Client, String) {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:1.0.0", json!({}))).await;
    let mut spec = json!({"analysis": analysis});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    apply::<Canary>(&client, &ns, canary(spec)).await;
    (client, ns)
}

/// Waits until the route gives the canary at least `weight`.
pub async fn wait_weight_at_least(client: &Client, ns: &str, weight: i64, timeout: Duration) {
    wait_for(
        &format!("canary weight {weight}"),
        timeout,
        Duration::from_millis(50),
        || async {
            match route_weight(client, ns).await {
                Some(w) if w >= weight => Ok(()),
                w => Err(format!("{w:?}")),
            }
        },
    )
    .await;
}

/// Sets (or with None removes) an annotation on the Canary podinfo, as `kubectl annotate
/// --field-manager=serin-manual` does: a merge patch under a field manager of its own.
pub async fn annotate_canary(client: &Client, ns: &str, key: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    let params = kube::api::PatchParams {
        field_manager: Some("serin-manual".into()),
        ..kube::api::PatchParams::default()
    };
    Api::<Canary>::namespaced(client.clone(), ns)
        .patch("podinfo", &params, &kube::api::Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("annotating {key}: {e}"));
}

/// Waits until podinfo-primary runs `image` and the Canary is Succeeded (a phase alone may be the last
/// rollout's).
pub async fn wait_promoted(client: &Client, ns: &str, image: &str, timeout: Duration) {
    wait_for(
        &format!("{ns}: {image} promoted"),
        timeout,
        Duration::from_millis(100),
        || async {
            let phase = status(client, ns).await.phase;
            let primary = image_of(client, ns, "podinfo-primary").await.0;
            if phase == Some(Phase::Succeeded) && primary == image {
                Ok(())
            } else {
                Err(format!("{phase:?}, primary on {primary}"))
            }
        },
    )
    .await;
}

/// Waits until the target podinfo's spec says zero replicas.
pub async fn target_at_zero(deployments: &Api<Deployment>, what: &str) {
    wait_for(
        what,
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let d = deployments
                .get("podinfo")
                .await
                .map_err(|e| e.to_string())?;
            match d.spec.and_then(|s| s.replicas) {
                Some(0) => Ok(()),
                r => Err(format!("replicas {r:?}")),
            }
        },
    )
    .await;
}

/// Waits until the Canary progresses at a weight of at least `weight`.
pub async fn wait_progressing_at(client: &Client, ns: &str, weight: i32, timeout: Duration) {
    wait_for(
        &format!("{ns}: the canary at {weight}% or more"),
        timeout,
        Duration::from_millis(100),
        || async {
            let c = Api::<Canary>::namespaced(client.clone(), ns)
                .get("podinfo")
                .await
                .map_err(|e| e.to_string())?;
            match c.status.map(|s| (s.phase, s.canary_weight)) {
                Some((Some(Phase::Progressing), w)) if w >= weight => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}
