//! Configs under faults, end to end: a Secret the target needs that appears only after the Canary, and a
//! ConfigMap deleted and restored mid-analysis. Serin holds with a condition naming the config, never
//! reads the gap as a new revision, and goes on where it was.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use serin::api::{Canary, CanaryStatus, Phase};
use serin_e2e::podinfo::{canary, deployment, status, wait_phase, weights_until};
use serin_e2e::{SerinProcess, apply, client, install_crds, namespace, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

fn ready_reason(s: &CanaryStatus) -> (String, String) {
    s.conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}

fn with_configs(image: &str) -> serde_json::Value {
    deployment(
        image,
        json!({"volumes": [{"name": "config", "configMap": {"name": "app-config"}}],
            "containers": [{"name": "podinfo", "image": image, "envFrom": [{"secretRef": {"name": "app-secret"}}]}]}),
    )
}

fn config_map() -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config"}, "data": {"level": "info"}})
}

fn secret() -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret"}, "stringData": {"TOKEN": "t0k3n"}})
}

/// A namespace of its own with the ConfigMap (and the Secret, if `with_secret`), podinfo 1.0.0 using both,
/// and its Canary (progressDeadlineSeconds 120).
async fn with_configs_set_up(
    prefix: &str,
    with_secret: bool,
    analysis: serde_json::Value,
) -> (Client, String) {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, prefix).await;
    apply::<ConfigMap>(&client, &ns, config_map()).await;
    if with_secret {
        apply::<Secret>(&client, &ns, secret()).await;
    }
    apply::<Deployment>(&client, &ns, with_configs("podinfo:1.0.0")).await;
    let spec = json!({"analysis": analysis, "progressDeadlineSeconds": 120});
    apply::<Canary>(&client, &ns, canary(spec)).await;
    (client, ns)
}

#[tokio::test]
async fn a_secret_that_appears_after_the_canary_completes_initialization() {
    let (client, ns) = with_configs_set_up(
        "configs-late",
        false,
        json!({"interval": "1s", "stepWeight": 50}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    let held = wait_for(
        "Ready=False ConfigNotFound",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let s = status(&client, &ns).await;
            match ready_reason(&s) {
                (r, m) if r == "ConfigNotFound" => Ok((s, m)),
                other => Err(format!("{:?} {other:?}", s.phase)),
            }
        },
    )
    .await;
    assert_eq!(held.0.phase, Some(Phase::Initializing));
    assert!(
        held.1.contains(&format!("Secret {ns}/app-secret")),
        "{}",
        held.1
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(
        deployments
            .get_opt("podinfo-primary")
            .await
            .unwrap()
            .is_none(),
        "no primary without its config"
    );

    apply::<Secret>(&client, &ns, secret()).await;
    let s = wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    assert_eq!(s.last_promoted_spec, s.last_applied_spec);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    assert!(
        secrets
            .get_opt("app-secret-primary")
            .await
            .unwrap()
            .is_some(),
        "the primary's copy"
    );
}

#[tokio::test]
async fn a_config_map_deleted_and_restored_mid_analysis_holds_then_resumes() {
    let (client, ns) = with_configs_set_up(
        "configs-gap",
        true,
        json!({"interval": "2s", "stepWeight": 10, "maxWeight": 50}),
    )
    .await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    apply::<Deployment>(&client, &ns, with_configs("podinfo:2.0.0")).await;
    wait_for(
        "weight 20",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let s = status(&client, &ns).await;
            if s.canary_weight >= 20 {
                Ok(())
            } else {
                Err(format!("{}", s.canary_weight))
            }
        },
    )
    .await;
    let revision = status(&client, &ns).await.last_applied_spec;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    config_maps
        .delete("app-config", &DeleteParams::default())
        .await
        .unwrap();
    let held = wait_for(
        "Ready=False ConfigNotFound",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let s = status(&client, &ns).await;
            match ready_reason(&s) {
                (r, _) if r == "ConfigNotFound" => Ok(s),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // Held for three intervals: no step, the same revision under analysis.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let still = status(&client, &ns).await;
    assert_eq!(
        (still.phase, still.canary_weight),
        (Some(Phase::Progressing), held.canary_weight)
    );
    assert_eq!(still.last_applied_spec, revision);
    apply::<ConfigMap>(&client, &ns, config_map()).await;
    let weights = weights_until(&client, &ns, Phase::Succeeded, Duration::from_secs(60)).await;
    assert!(
        weights.windows(2).all(|w| w[1] > w[0] || w[1] == 0),
        "monotone, no restart: {weights:?}"
    );
    let done = status(&client, &ns).await;
    assert_eq!(
        done.last_promoted_spec, revision,
        "the revision analysed before the gap was promoted"
    );
}
