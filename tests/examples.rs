//! Every folder of examples/ applied to the local cluster as written and driven to its end state, so none
//! can rot. Two changes for the test world only: the analysis interval is shortened (1m would make `make
//! test` minutes longer), and the traffic simulator is asked to send traffic through the route.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin_e2e::podinfo::{image_of, wait_phase};
use serin_e2e::{
    SerinProcess, annotate, apply, client, httproute_resource, install_crds, namespace, repo_dir,
};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// The objects of every YAML file in `dir`, in file order.
fn objects(dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            serde_saphyr::from_multiple::<Value>(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Applies an example's objects to `ns`, the Canary's interval shortened to `interval`.
async fn apply_example(client: &kube::Client, ns: &str, dir: &str, interval: &str) -> Vec<Value> {
    let objects = objects(&repo_dir().join("examples").join(dir));
    assert!(!objects.is_empty(), "examples/{dir} is empty");
    for mut object in objects.clone() {
        match object["kind"].as_str() {
            Some("Deployment") => {
                apply::<Deployment>(client, ns, object).await;
            }
            Some("Canary") => {
                assert_eq!(object["apiVersion"], "serin.dev/v1beta1");
                object["spec"]["analysis"]["interval"] = json!(interval);
                apply::<Canary>(client, ns, object).await;
            }
            other => panic!("examples/{dir}: the test does not apply kind {other:?} yet"),
        }
    }
    objects
}

/// examples/gatewayapi: initialized, then a new image stepped through the HTTPRoute and promoted.
#[tokio::test]
async fn the_gatewayapi_example_promotes_a_new_image() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "example-gatewayapi").await;
    let objects = apply_example(&client, &ns, "gatewayapi", "2s").await;
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    annotate(
        &client,
        &ns,
        &httproute_resource(),
        "podinfo",
        json!({"trafficsim.serin.dev/rps": "100"}),
    )
    .await;
    // The next release, as git would carry it: the example's Deployment with a new image.
    let image = "ghcr.io/stefanprodan/podinfo:6.0.1";
    let mut next = objects
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("the example's Deployment");
    next["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    apply::<Deployment>(&client, &ns, next).await;
    let s = wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(120)).await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        image,
        "{s:?}"
    );
}
