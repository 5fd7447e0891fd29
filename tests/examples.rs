//! Every folder of examples/ applied to the local cluster and driven to its end state (a new image
//! promoted), so none can rot. Changed for the test world only, and nothing else: the analysis interval is
//! shortened (minutes would make `make test` far longer); addresses outside the cluster (Prometheus, the
//! load tester, Slack) point at the test world's; a namespace written in the example becomes the test's;
//! the traffic simulator sends traffic through the route.

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::pinned_kind;
use serde_json::{Value, json};
use serin::api::Phase;
use serin_e2e::podinfo::{image_of, wait_phase};
use serin_e2e::receiver::Receiver;
use serin_e2e::{
    SerinProcess, annotate, client, cluster, install_crds, namespace, repo_dir, wait_for,
};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");
const NEXT_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";

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

/// Server-side applies any object to `ns`, its kind found by discovery.
async fn apply_object(client: &kube::Client, ns: &str, mut object: Value) {
    let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            object["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, object["kind"].as_str().unwrap());
    let (ar, _) = pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{gvk:?}: {e}"));
    object["metadata"]["namespace"] = json!(ns);
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .patch(
            &name,
            &PatchParams::apply("serin-e2e").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind));
}

/// What an example needs of the test world.
struct World {
    /// The route the simulator sends traffic through once the Canary is initialized (None: the
    /// example's webhooks ask the load tester for it), with more of the simulator's annotations.
    route: Option<(ApiResource, Value)>,
    receiver: Option<Receiver>,
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// The example's objects, made to run in the test world (see the module's comment).
fn adapted(
    objects: Vec<Value>,
    ns: &str,
    world: &World,
    prometheus: &str,
    loadtester: &str,
) -> Vec<Value> {
    objects
        .into_iter()
        .map(|mut o| {
            let mut text = o.to_string();
            text = text.replace(
                "http://serin-loadtester.serin-system/",
                &format!("{loadtester}/"),
            );
            text = text.replace("http://prometheus.monitoring:9090", prometheus);
            text = text.replace(".test:", &format!(".{ns}:"));
            if let Some(rx) = &world.receiver {
                text = text.replace(
                    "https://hooks.slack.com/services/YOUR/WEBHOOK/URL",
                    &format!("{}/slack", rx.url),
                );
            }
            o = serde_json::from_str(&text).unwrap();
            if o["kind"] == "Canary" {
                o["spec"]["analysis"]["interval"] = json!("2s");
                for m in o["spec"]["analysis"]["metrics"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    m["interval"] = json!("10s");
                }
            }
            o
        })
        .collect()
}

/// Applies examples/`dir`, waits for the Canary to be initialized, gives the Deployment a new image and
/// waits for its promotion.
async fn run_example(dir: &str, world: World) {
    let client = client().await;
    install_crds(&client).await;
    let env = cluster().await;
    let ns = namespace(&client, &format!("example-{dir}")).await;
    let found = objects(&repo_dir().join("examples").join(dir));
    let objects = adapted(found, &ns, &world, env.prometheus(), env.loadtester());
    assert!(
        objects.iter().any(|o| o["kind"] == "Canary"),
        "examples/{dir} has a Canary"
    );
    let traffic = world.route.as_ref().map(|(ar, extra)| {
        let mut annotations = json!({"trafficsim.serin.dev/rps": "100"});
        annotations
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        (ar, annotations)
    });
    // A route of the example's own (nginx's Ingress) carries the simulator's annotations from the start.
    let own_route = |o: &Value| {
        traffic
            .as_ref()
            .is_some_and(|(ar, _)| o["kind"] == ar.kind.as_str())
    };
    for mut o in objects.clone() {
        if let (true, Some((_, annotations))) = (own_route(&o), &traffic) {
            o["metadata"]["annotations"] = annotations.clone();
        }
        apply_object(&client, &ns, o).await;
    }
    let _serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    if let Some((ar, annotations)) = &traffic
        && !objects.iter().any(own_route)
    {
        annotate(&client, &ns, ar, "podinfo", annotations.clone()).await;
    }
    // The next release, as git would carry it: the example's Deployment with a new image.
    let mut next = objects
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    next["spec"]["template"]["spec"]["containers"][0]["image"] = json!(NEXT_IMAGE);
    apply_object(&client, &ns, next).await;
    let s = wait_phase(&client, &ns, Phase::Succeeded, Duration::from_secs(120)).await;
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await.0,
        NEXT_IMAGE,
        "{s:?}"
    );
    if let Some(rx) = &world.receiver {
        wait_for(
            "the promotion in Slack",
            Duration::from_secs(10),
            Duration::from_millis(200),
            || async {
                let got: Vec<String> = rx.received("/slack").into_iter().map(|r| r.body).collect();
                if got
                    .iter()
                    .any(|b| b.contains("Promotion") || b.contains("promot"))
                {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        )
        .await;
    }
}

fn http_route() -> ApiResource {
    resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
}

#[tokio::test]
async fn gatewayapi() {
    run_example(
        "gatewayapi",
        World {
            route: Some((http_route(), json!({}))),
            receiver: None,
        },
    )
    .await;
}

#[tokio::test]
async fn ab_testing() {
    let mix = json!([{"share": 0.5, "headers": {"x-canary": "insider"}}]).to_string();
    let world = World {
        route: Some((
            http_route(),
            json!({"trafficsim.serin.dev/request-mix": mix}),
        )),
        receiver: None,
    };
    run_example("ab-testing", world).await;
}

#[tokio::test]
async fn bluegreen_with_the_load_tester() {
    run_example(
        "bluegreen",
        World {
            route: None,
            receiver: None,
        },
    )
    .await;
}

#[tokio::test]
async fn metric_template() {
    run_example(
        "metric-template",
        World {
            route: Some((http_route(), json!({}))),
            receiver: None,
        },
    )
    .await;
}

#[tokio::test]
async fn alerts() {
    let world = World {
        route: Some((http_route(), json!({}))),
        receiver: Some(Receiver::start().await),
    };
    run_example("alerts", world).await;
}

#[tokio::test]
async fn istio() {
    let vs = resource(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    );
    run_example(
        "istio",
        World {
            route: Some((vs, json!({}))),
            receiver: None,
        },
    )
    .await;
}

#[tokio::test]
async fn linkerd() {
    let ts = resource(
        "split.smi-spec.io",
        "v1alpha2",
        "TrafficSplit",
        "trafficsplits",
    );
    run_example(
        "linkerd",
        World {
            route: Some((ts, json!({}))),
            receiver: None,
        },
    )
    .await;
}

#[tokio::test]
async fn nginx() {
    let ingress = resource("networking.k8s.io", "v1", "Ingress", "ingresses");
    run_example(
        "nginx",
        World {
            route: Some((ingress, json!({}))),
            receiver: None,
        },
    )
    .await;
}

#[tokio::test]
async fn contour() {
    let proxy = resource("projectcontour.io", "v1", "HTTPProxy", "httpproxies");
    run_example(
        "contour",
        World {
            route: Some((proxy, json!({}))),
            receiver: None,
        },
    )
    .await;
}

#[tokio::test]
async fn traefik() {
    let ts = resource(
        "traefik.io",
        "v1alpha1",
        "TraefikService",
        "traefikservices",
    );
    run_example(
        "traefik",
        World {
            route: Some((ts, json!({}))),
            receiver: None,
        },
    )
    .await;
}
