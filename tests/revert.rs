//! revertOnDeletion, end to end: traffic moves to the target only once its pods are ready, the route keeps
//! serving after the Canary is gone, a failed revision never gets the traffic, and the finalizer goes
//! within progressDeadlineSeconds whatever happens.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ResourceQuota, Service};
use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::json;
use serin::api::{Canary, Phase};
use serin_e2e::podinfo::{deployment, image_of, setup, wait_phase};
use serin_e2e::{SerinProcess, apply, event_notes, httproute_resource, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

async fn delete_and_wait_gone(client: &Client, ns: &str, within: Duration) -> Duration {
    let canaries: Api<Canary> = Api::namespaced(client.clone(), ns);
    canaries
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    let start = Instant::now();
    wait_for(
        "the Canary to be gone",
        within,
        Duration::from_millis(100),
        || async {
            match canaries.get_opt("podinfo").await {
                Ok(None) => Ok(()),
                other => Err(format!(
                    "{:?}",
                    other.map(|c| c.and_then(|c| c.status).and_then(|s| s.phase))
                )),
            }
        },
    )
    .await;
    start.elapsed()
}

/// The route after the Canary is gone: its backends and owners.
async fn route(client: &Client, ns: &str) -> (serde_json::Value, usize) {
    let r = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &httproute_resource())
        .get("podinfo")
        .await
        .expect("the route stays");
    let owners = r.metadata.owner_references.unwrap_or_default().len();
    (r.data["spec"]["rules"][0]["backendRefs"].clone(), owners)
}

#[tokio::test]
async fn traffic_moves_to_the_target_only_once_it_is_ready_and_the_route_keeps_serving() {
    let (client, ns) = setup(
        "revert-ready",
        json!({"interval": "1s", "stepWeight": 50}),
        json!({"revertOnDeletion": true}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    // Sample the apex Service's selector and the target's available replicas together.
    let samples = Arc::new(Mutex::new(Vec::<(String, i32)>::new()));
    let sampler = {
        let (client, ns, samples) = (client.clone(), ns.clone(), samples.clone());
        tokio::spawn(async move {
            let services: Api<Service> = Api::namespaced(client.clone(), &ns);
            let deployments: Api<Deployment> = Api::namespaced(client, &ns);
            loop {
                let selector = services
                    .get("podinfo")
                    .await
                    .ok()
                    .and_then(|s| s.spec?.selector?.get("app").cloned());
                let available = deployments
                    .get("podinfo")
                    .await
                    .ok()
                    .and_then(|d| d.status?.available_replicas)
                    .unwrap_or(0);
                if let Some(selector) = selector {
                    samples.lock().unwrap().push((selector, available));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    delete_and_wait_gone(&client, &ns, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sampler.abort();
    let samples = samples.lock().unwrap().clone();
    let on_target: Vec<&(String, i32)> = samples.iter().filter(|(s, _)| s == "podinfo").collect();
    assert!(
        !on_target.is_empty(),
        "the apex Service selects the target in the end: {samples:?}"
    );
    assert!(
        on_target.iter().all(|(_, available)| *available == 3),
        "traffic moved before the target was ready: {samples:?}"
    );
    let (backends, owners) = route(&client, &ns).await;
    assert_eq!(owners, 0, "the route outlives the Canary");
    assert_eq!(
        backends,
        json!([{"group": "", "kind": "Service", "name": "podinfo", "port": 9898, "weight": 1}])
    );
}

#[tokio::test]
async fn deleting_a_failed_canary_keeps_the_primary_serving() {
    let (client, ns) = setup(
        "revert-failed",
        json!({"interval": "1s", "stepWeight": 50, "threshold": 1,
            "metrics": [{"name": "bad", "query": "vector(1)", "thresholdRange": {"max": 0.5}}]}),
        json!({"revertOnDeletion": true}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:2.0.0", json!({}))).await;
    wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(40)).await;
    delete_and_wait_gone(&client, &ns, Duration::from_secs(30)).await;
    let notes = event_notes(&client, &ns, "KeptPrimary").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("podinfo-primary keeps serving")),
        "{notes:?}"
    );
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    // Once the collector has taken what the Canary still owned (the -canary Service), the primary is there.
    wait_for(
        "the -canary Service to be collected",
        Duration::from_secs(75),
        Duration::from_millis(200),
        || async {
            match services.get_opt("podinfo-canary").await {
                Ok(None) => Ok(()),
                other => Err(format!("{:?}", other.map(|s| s.is_some()))),
            }
        },
    )
    .await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await,
        ("podinfo:1.0.0".into(), 3)
    );
    assert_eq!(
        image_of(&client, &ns, "podinfo").await.1,
        0,
        "the failed revision gets no pods"
    );
    let apex = services.get("podinfo").await.unwrap();
    assert_eq!(
        apex.spec.unwrap().selector.unwrap()["app"],
        "podinfo-primary"
    );
    let (backends, owners) = route(&client, &ns).await;
    assert_eq!((backends[0]["name"].as_str(), owners), (Some("podinfo"), 0));
}

#[tokio::test]
async fn a_target_that_never_gets_ready_releases_the_finalizer_at_the_deadline() {
    let (client, ns) = setup(
        "revert-deadline",
        json!({"interval": "1s", "stepWeight": 50}),
        json!({"revertOnDeletion": true, "progressDeadlineSeconds": 10}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    // The target is at zero, its pods gone.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "the target at zero",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let d = deployments
                .get("podinfo")
                .await
                .map_err(|e| e.to_string())?;
            let (spec, status) = (
                d.spec.and_then(|s| s.replicas),
                d.status.and_then(|s| s.replicas),
            );
            match (spec, status.unwrap_or(0)) {
                (Some(0), 0) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // The primary's 3 pods use the namespace's whole quota: the target can't get a pod.
    apply::<ResourceQuota>(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "pods"}, "spec": {"hard": {"pods": "3"}}}),
    )
    .await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "the quota to count the primary's pods",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let used = quotas
                .get("pods")
                .await
                .ok()
                .and_then(|q| q.status?.used?.get("pods").cloned());
            match used {
                Some(q) if q.0 == "3" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let took = delete_and_wait_gone(&client, &ns, Duration::from_secs(40)).await;
    eprintln!("measured: the finalizer went {took:?} after the deletion (deadline 10s)");
    let notes = event_notes(&client, &ns, "KeptPrimary").await;
    let reverted = event_notes(&client, &ns, "Reverted").await;
    assert!(
        reverted.is_empty(),
        "reverted to a target that could not be ready: {reverted:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("not ready within the progress deadline")),
        "{notes:?}"
    );
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let apex = services.get("podinfo").await.unwrap();
    assert_eq!(
        apex.spec.unwrap().selector.unwrap()["app"],
        "podinfo-primary"
    );
}
