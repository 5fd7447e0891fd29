//! `make demo`: Serin at work on the local cluster. Brings the cluster up (or reuses it), installs Serin's
//! CRDs, runs the controller, deploys podinfo behind a Canary with simulated traffic, then rolls out a new
//! version and prints, as it happens, the canary's phase, the route's weights, and the traffic split that
//! Prometheus sees.
//!
//! Usage: serin-demo <path to the serin binary>

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin_e2e::{
    SerinProcess, apply, client, cluster, httproute_resource, install_crds, prometheus_value,
    wait_for,
};

const NS: &str = "serin-demo";

fn podinfo(version: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {"metadata": {"labels": {"app": "podinfo"}, "annotations": {"trafficsim.serin.dev/latency-ms": "20"}},
                "spec": {"containers": [{"name": "podinfo", "image": format!("ghcr.io/stefanprodan/podinfo:{version}"),
                    "ports": [{"name": "http", "containerPort": 9898}]}]}}}
    })
}

fn canary() -> Value {
    json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": "gatewayapi", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "gatewayRefs": [{"name": "public-gateway"}], "hosts": ["podinfo.local"]},
            "analysis": {"interval": "3s", "stepWeight": 10, "maxWeight": 50, "threshold": 2}}
    })
}

/// A fresh namespace: the demo's objects from an earlier run are removed first.
async fn fresh_namespace(client: &Client) {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(NS).await.ok().flatten().is_some() {
        println!("removing the previous demo's namespace ...");
        let _ = api.delete(NS, &DeleteParams::default()).await;
        wait_for(
            "the old demo namespace to go",
            Duration::from_secs(90),
            Duration::from_millis(500),
            || async {
                match api.get_opt(NS).await {
                    Ok(None) => Ok(()),
                    other => Err(format!("{:?}", other.map(|n| n.map(|n| n.status)))),
                }
            },
        )
        .await;
    }
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("creating the demo namespace");
}

async fn line(client: &Client, clock: &Instant) -> (Option<Phase>, String) {
    let canary = Api::<Canary>::namespaced(client.clone(), NS)
        .get("podinfo")
        .await
        .ok();
    let status = canary.and_then(|c| c.status).unwrap_or_default();
    let route = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &httproute_resource())
        .get("podinfo")
        .await
        .ok();
    let weights = route
        .and_then(|r| {
            r.data["spec"]["rules"][0]["backendRefs"]
                .as_array()
                .cloned()
        })
        .map(|refs| {
            refs.iter()
                .map(|b| b["weight"].to_string())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_else(|| "-".into());
    let sel = |re: &str| format!(r#"kubernetes_namespace="{NS}",kubernetes_pod_name=~"{re}""#);
    let canary_rps = format!(
        "sum(rate(http_request_duration_seconds_count{{{}}}[5s]))",
        sel("podinfo-[0-9a-z]+-[0-9a-z]+")
    );
    let all_rps = format!(
        "sum(rate(http_request_duration_seconds_count{{{}}}[5s]))",
        sel("podinfo-.*")
    );
    let share = match (
        prometheus_value(&canary_rps).await,
        prometheus_value(&all_rps).await,
    ) {
        (Ok(c), Ok(a)) if a > 0.0 => format!("{:5.1}% of {:5.1} req/s", 100.0 * c / a, a),
        (Err(_), Ok(a)) => format!("{:5.1}% of {:5.1} req/s", 0.0, a),
        _ => "no traffic yet".into(),
    };
    let s = clock.elapsed().as_secs();
    let phase = status.phase.map_or("-".to_string(), |p| p.to_string());
    (
        status.phase,
        format!(
            "[{:02}:{:02}] {phase:<12} canary weight {:>3}  route primary/canary {weights:<7}  Prometheus: canary serves {share}",
            s / 60,
            s % 60,
            status.canary_weight
        ),
    )
}

#[tokio::main]
async fn main() {
    let Some(serin_bin) = std::env::args().nth(1) else {
        eprintln!("usage: serin-demo <path to the serin binary>");
        std::process::exit(2);
    };
    let env = cluster().await;
    let client = client().await;
    println!(
        "\nThe local cluster: KUBECONFIG={}  PROMETHEUS={}",
        env.kubeconfig(),
        env.prometheus()
    );
    install_crds(&client).await;
    fresh_namespace(&client).await;
    let serin = SerinProcess::start(&serin_bin, NS, "demo").await;
    println!("serin run --namespace {NS} (log: {})", serin.log.display());
    let clock = Instant::now();

    println!(
        "\npodinfo 6.0.0 (3 replicas) with a Canary: interval 3s, stepWeight 10, maxWeight 50"
    );
    apply::<Deployment>(&client, NS, podinfo("6.0.0")).await;
    apply::<Canary>(&client, NS, canary()).await;
    loop {
        let (phase, text) = line(&client, &clock).await;
        println!("{text}");
        if phase == Some(Phase::Initialized) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "\nSerin made podinfo-primary, the Services podinfo, podinfo-primary, podinfo-canary and the HTTPRoute podinfo;"
    );
    println!(
        "the traffic simulator sends 50 req/s through the route. Letting Prometheus see a few seconds of it ..."
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    println!("{}", line(&client, &clock).await.1);

    println!("\nRolling out podinfo 6.0.1:");
    apply::<Deployment>(&client, NS, podinfo("6.0.1")).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (phase, text) = line(&client, &clock).await;
        println!("{text}");
        if phase == Some(Phase::Succeeded)
            || phase == Some(Phase::Failed)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let primary = Api::<Deployment>::namespaced(client.clone(), NS)
        .get("podinfo-primary")
        .await
        .ok();
    let image = primary
        .and_then(|d| d.spec)
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default();
    println!("\npodinfo-primary now runs {image}.");
    println!(
        "Look around: {}/kubectl --kubeconfig {} -n {NS} get canaries,deploy,svc,httproutes,events",
        env.get("SERIN_BIN"),
        env.kubeconfig()
    );
    println!("The cluster stays up for the next run; e2e/cluster/down stops it.");
    drop(serin);
}
