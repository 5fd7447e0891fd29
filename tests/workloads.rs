//! Workloads a Flagger user runs, end to end: a Deployment behind an apex Service that existed before the
//! Canary (taken over, given back), and a DaemonSet target (scaled to zero by a node selector, promoted,
//! rolled back, restored on deletion).

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin_e2e::podinfo::{canary, deployment, wait_phase};
use serin_e2e::{SerinProcess, apply, client, install_crds, namespace, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// A metric that always fails: the next revision is rolled back.
fn failing_metric() -> Value {
    json!([{"name": "always-bad", "query": "vector(1)", "thresholdRange": {"max": 0.5}}])
}

async fn set_metrics(client: &Client, ns: &str, metrics: Value) {
    Api::<Canary>::namespaced(client.clone(), ns)
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"analysis": {"metrics": metrics}}})),
        )
        .await
        .unwrap();
}

/// The user's own Service, as their GitOps tool applies it (its own field manager).
async fn users_service(client: &Client, ns: &str) -> Service {
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo", "annotations": {"team.example.com/owner": "web"}, "labels": {"team": "web"}},
        "spec": {"sessionAffinity": "ClientIP", "selector": {"app": "podinfo"},
            "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]}});
    Api::<Service>::namespaced(client.clone(), ns)
        .patch(
            "podinfo",
            &PatchParams::apply("kustomize-controller").force(),
            &Patch::Apply(&svc),
        )
        .await
        .unwrap()
}

async fn service(client: &Client, ns: &str) -> Service {
    Api::<Service>::namespaced(client.clone(), ns)
        .get("podinfo")
        .await
        .expect("the apex Service")
}

fn selector(s: &Service) -> Value {
    json!(s.spec.as_ref().and_then(|s| s.selector.clone()))
}

fn annotation(s: &Service, key: &str) -> Option<String> {
    s.metadata.annotations.as_ref()?.get(key).cloned()
}

/// What the user wrote survives Serin's takeover.
fn assert_users_fields_kept(s: &Service) {
    assert_eq!(
        annotation(s, "team.example.com/owner").as_deref(),
        Some("web")
    );
    assert_eq!(
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("web")
    );
    assert_eq!(
        s.spec.as_ref().and_then(|s| s.session_affinity.as_deref()),
        Some("ClientIP")
    );
    assert!(
        s.metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty()),
        "the user's Service is never owned by the Canary"
    );
}

async fn setup_with_users_service(prefix: &str, extra: Value) -> (Client, String) {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:1.0.0", json!({}))).await;
    users_service(&client, &ns).await;
    let mut spec = json!({"analysis": {"interval": "1s", "stepWeight": 50}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    apply::<Canary>(&client, &ns, canary(spec)).await;
    (client, ns)
}

#[tokio::test]
async fn an_existing_apex_service_is_taken_over_through_promotion_and_rollback() {
    let (client, ns) = setup_with_users_service("takeover", json!({})).await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    let s = service(&client, &ns).await;
    assert_eq!(selector(&s), json!({"app": "podinfo-primary"}));
    assert_eq!(
        annotation(&s, "kustomize.toolkit.fluxcd.io/reconcile").as_deref(),
        Some("disabled")
    );
    assert_eq!(
        annotation(&s, "helm.toolkit.fluxcd.io/driftDetection").as_deref(),
        Some("disabled")
    );
    assert_users_fields_kept(&s);

    apply::<Deployment>(&client, &ns, deployment("podinfo:2.0.0", json!({}))).await;
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(60)).await;
    let s = service(&client, &ns).await;
    assert_eq!(selector(&s), json!({"app": "podinfo-primary"}));
    assert_users_fields_kept(&s);

    set_metrics(&client, &ns, failing_metric()).await;
    apply::<Deployment>(&client, &ns, deployment("podinfo:3.0.0", json!({}))).await;
    wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(60)).await;
    let s = service(&client, &ns).await;
    assert_eq!(selector(&s), json!({"app": "podinfo-primary"}));
    assert_users_fields_kept(&s);
}

#[tokio::test]
async fn a_taken_over_apex_service_is_given_back_as_it_was_on_deletion() {
    let (client, ns) =
        setup_with_users_service("giveback", json!({"revertOnDeletion": true})).await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    assert_eq!(
        selector(&service(&client, &ns).await),
        json!({"app": "podinfo-primary"})
    );
    let canaries: Api<Canary> = Api::namespaced(client.clone(), &ns);
    canaries
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    wait_for(
        "the Canary to be gone",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            match canaries.get_opt("podinfo").await {
                Ok(None) => Ok(()),
                other => Err(format!("{:?}", other.map(|c| c.is_some()))),
            }
        },
    )
    .await;
    // The garbage collector takes what the Canary owned; the user's Service must not be among it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = service(&client, &ns).await;
    assert_eq!(selector(&s), json!({"app": "podinfo"}));
    for key in [
        "kustomize.toolkit.fluxcd.io/reconcile",
        "helm.toolkit.fluxcd.io/driftDetection",
        "serin.dev/original-selector",
    ] {
        assert_eq!(annotation(&s, key), None, "{key} is gone");
    }
    assert_users_fields_kept(&s);
}

/// A podinfo DaemonSet at `image` (one pod on each of the test world's three nodes).
fn daemon_set(image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "podinfo"},
        "spec": {"selector": {"matchLabels": {"app": "podinfo"}},
            "template": {"metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{"name": "podinfo", "image": image,
                    "ports": [{"name": "http", "containerPort": 9898}]}]}}}})
}

/// A DaemonSet's image, whether Serin's scale-to-zero node selector is on it, and its available pods.
async fn daemon_set_state(client: &Client, ns: &str, name: &str) -> (String, bool, i32) {
    let ds = Api::<DaemonSet>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("the DaemonSet");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    (
        pod.containers[0].image.clone().unwrap_or_default(),
        pod.node_selector
            .is_some_and(|n| n.contains_key("serin.dev/scale-to-zero")),
        ds.status.and_then(|s| s.number_available).unwrap_or(0),
    )
}

/// Waits until `read` (a workload's image and two figures) gives `want`.
async fn wait_state<T, F, Fut>(what: &str, want: (&str, T, i32), read: F)
where
    T: PartialEq + std::fmt::Debug + Copy,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (String, T, i32)>,
{
    wait_for(
        &format!("{what} at {want:?}"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let got = read().await;
            if (got.0.as_str(), got.1, got.2) == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
}

async fn wait_daemon_set(client: &Client, ns: &str, name: &str, want: (&str, bool, i32)) {
    wait_state(&format!("DaemonSet {name}"), want, || {
        daemon_set_state(client, ns, name)
    })
    .await;
}

#[tokio::test]
async fn a_daemon_set_is_promoted_rolled_back_and_restored_on_deletion() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "daemonset").await;
    apply::<DaemonSet>(&client, &ns, daemon_set("podinfo:1.0.0")).await;
    apply::<Canary>(
        &client,
        &ns,
        canary(
            json!({"targetRef": {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "podinfo"},
            "revertOnDeletion": true, "analysis": {"interval": "1s", "stepWeight": 50}}),
        ),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    // The primary runs on every node; the target's pods are gone from all of them.
    wait_daemon_set(&client, &ns, "podinfo-primary", ("podinfo:1.0.0", false, 3)).await;
    wait_daemon_set(&client, &ns, "podinfo", ("podinfo:1.0.0", true, 0)).await;

    apply::<DaemonSet>(&client, &ns, daemon_set("podinfo:2.0.0")).await;
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(60)).await;
    wait_daemon_set(&client, &ns, "podinfo-primary", ("podinfo:2.0.0", false, 3)).await;
    wait_daemon_set(&client, &ns, "podinfo", ("podinfo:2.0.0", true, 0)).await;
    let events = serin_e2e::podinfo::status(&client, &ns).await;
    assert_eq!(events.failed_checks, 0);

    set_metrics(&client, &ns, failing_metric()).await;
    apply::<DaemonSet>(&client, &ns, daemon_set("podinfo:3.0.0")).await;
    wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(60)).await;
    wait_daemon_set(&client, &ns, "podinfo-primary", ("podinfo:2.0.0", false, 3)).await;
    wait_daemon_set(&client, &ns, "podinfo", ("podinfo:3.0.0", true, 0)).await;

    // Back to the promoted revision in git, then the Canary is deleted: the target runs again on every
    // node and the apex Service selects it.
    apply::<DaemonSet>(&client, &ns, daemon_set("podinfo:2.0.0")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Api::<Canary>::namespaced(client.clone(), &ns)
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    wait_daemon_set(&client, &ns, "podinfo", ("podinfo:2.0.0", false, 3)).await;
    wait_for(
        "the apex Service to select the target",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            match Api::<Service>::namespaced(client.clone(), &ns)
                .get("podinfo")
                .await
            {
                Ok(s) if selector(&s) == json!({"app": "podinfo"}) => Ok(()),
                other => Err(format!("{:?}", other.map(|s| selector(&s)))),
            }
        },
    )
    .await;
}

/// podinfo as a StatefulSet of 2 at `image`, governed by the headless Service podinfo-headless, each pod
/// with a volume claim of its own.
fn stateful_set(image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "podinfo"},
        "spec": {"replicas": 2, "serviceName": "podinfo-headless", "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {"metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{"name": "podinfo", "image": image,
                    "ports": [{"name": "http", "containerPort": 9898}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"storageClassName": "", "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}}}]}})
}

/// A PersistentVolume for each claim the test's StatefulSets will make, bound to it in advance (the test
/// world has no storage provisioner; kube-controller-manager's volume binder does the binding).
async fn volumes_for(client: &Client, ns: &str, claims: &[&str]) -> Vec<String> {
    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    let mut names = Vec::new();
    for claim in claims {
        let name = format!("{ns}-{claim}");
        let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": format!("/tmp/serin-pv/{name}")},
                "claimRef": {"namespace": ns, "name": claim}}});
        pvs.patch(
            &name,
            &PatchParams::apply("serin-e2e").force(),
            &Patch::Apply(&pv),
        )
        .await
        .unwrap();
        names.push(name);
    }
    names
}

async fn stateful_set_state(client: &Client, ns: &str, name: &str) -> (String, i32, i32) {
    let sts = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("the StatefulSet");
    let spec = sts.spec.unwrap();
    (
        spec.template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default(),
        spec.replicas.unwrap_or(1),
        sts.status.and_then(|s| s.available_replicas).unwrap_or(0),
    )
}

async fn wait_stateful_set(client: &Client, ns: &str, name: &str, want: (&str, i32, i32)) {
    wait_state(&format!("StatefulSet {name}"), want, || {
        stateful_set_state(client, ns, name)
    })
    .await;
}

#[tokio::test]
async fn a_stateful_set_is_promoted_with_volumes_and_a_governing_service_of_its_own() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "statefulset").await;
    let pvs = volumes_for(
        &client,
        &ns,
        &[
            "data-podinfo-0",
            "data-podinfo-1",
            "data-podinfo-primary-0",
            "data-podinfo-primary-1",
        ],
    )
    .await;
    apply::<Service>(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo-headless"},
            "spec": {"clusterIP": "None", "selector": {"app": "podinfo"}, "ports": [{"name": "http", "port": 9898}]}}),
    )
    .await;
    apply::<k8s_openapi::api::apps::v1::StatefulSet>(&client, &ns, stateful_set("podinfo:1.0.0"))
        .await;
    apply::<Canary>(
        &client,
        &ns,
        canary(
            json!({"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "podinfo"},
            "analysis": {"interval": "1s", "stepWeight": 50}}),
        ),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(60)).await;
    wait_stateful_set(&client, &ns, "podinfo-primary", ("podinfo:1.0.0", 2, 2)).await;
    wait_stateful_set(&client, &ns, "podinfo", ("podinfo:1.0.0", 0, 0)).await;
    let primary = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), &ns)
        .get("podinfo-primary")
        .await
        .unwrap();
    assert_eq!(
        primary.spec.unwrap().service_name.as_deref(),
        Some("podinfo-headless-primary")
    );
    let governing = Api::<Service>::namespaced(client.clone(), &ns)
        .get("podinfo-headless-primary")
        .await
        .expect("the primary's governing Service");
    let spec = governing.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(json!(spec.selector), json!({"app": "podinfo-primary"}));
    // A change to the governing Service reaches its copy by the watch, not at the settled Canary's
    // half-hourly look: the StatefulSet names the Service, the Canary does not.
    apply::<Service>(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo-headless"},
            "spec": {"clusterIP": "None", "selector": {"app": "podinfo"},
                "ports": [{"name": "http", "port": 9898}, {"name": "metrics", "port": 9797}]}}),
    )
    .await;
    wait_for(
        "the primary's governing Service to take podinfo-headless's new port",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let ports: Vec<i32> = Api::<Service>::namespaced(client.clone(), &ns)
                .get("podinfo-headless-primary")
                .await
                .ok()
                .and_then(|s| s.spec?.ports)
                .unwrap_or_default()
                .iter()
                .map(|p| p.port)
                .collect();
            if ports == [9898, 9797] {
                Ok(())
            } else {
                Err(format!("ports {ports:?}"))
            }
        },
    )
    .await;
    // Each StatefulSet's pods have volumes of their own.
    let claims: Vec<String> =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
    for claim in [
        "data-podinfo-0",
        "data-podinfo-1",
        "data-podinfo-primary-0",
        "data-podinfo-primary-1",
    ] {
        assert!(claims.iter().any(|c| c == claim), "{claim} in {claims:?}");
    }

    apply::<k8s_openapi::api::apps::v1::StatefulSet>(&client, &ns, stateful_set("podinfo:2.0.0"))
        .await;
    wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(90)).await;
    wait_stateful_set(&client, &ns, "podinfo-primary", ("podinfo:2.0.0", 2, 2)).await;
    wait_stateful_set(&client, &ns, "podinfo", ("podinfo:2.0.0", 0, 0)).await;

    let api: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    for pv in pvs {
        let _ = api.delete(&pv, &Default::default()).await;
    }
}
