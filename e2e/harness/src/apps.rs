//! Plain workloads for tests of the test world itself: a Deployment, the Service in front of it, and
//! waiting for its rollout on the kwok nodes.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::wait_for;

/// A Deployment `name` of `replicas` pods labelled app=`name`, with these pod template annotations.
pub fn deployment(name: &str, replicas: i32, image: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 9898}]}]}
            }
        }
    })
}

/// A Service `name` selecting app=`name`, port 9898.
pub fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9898, "targetPort": "http"}]}
    })
}

/// Waits until the Deployment has rolled out: observed, every replica updated and available.
pub async fn wait_rolled_out(client: &Client, ns: &str, name: &str, replicas: i32) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("deployment {ns}/{name} to roll out"),
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let d = api.get(name).await.map_err(|e| e.to_string())?;
            let status = d.status.clone().unwrap_or_default();
            let generation = d.metadata.generation.unwrap_or_default();
            let done = status.observed_generation == Some(generation)
                && status.updated_replicas == Some(replicas)
                && status.available_replicas == Some(replicas)
                && status.replicas == Some(replicas);
            if done {
                Ok(d)
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await
}
