//! `make demo`: the local cluster at work. Brings the cluster up (or reuses it), rolls out a sample
//! Deployment behind an HTTPRoute with simulated traffic, then rolls out a worse version, printing what
//! Prometheus sees as it happens.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use serin_e2e::{apply, apply_httproute, client, cluster, prometheus_value};

const NS: &str = "serin-demo";

fn podinfo(version: &str, error_rate: &str, latency_ms: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "podinfo"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {"labels": {"app": "podinfo"}, "annotations": {
                    "trafficsim.serin.dev/error-rate": error_rate, "trafficsim.serin.dev/latency-ms": latency_ms}},
                "spec": {"containers": [{"name": "podinfo", "image": format!("ghcr.io/stefanprodan/podinfo:{version}"),
                    "ports": [{"name": "http", "containerPort": 9898}]}]}
            }
        }
    })
}

struct Clock(Instant);
impl Clock {
    fn stamp(&self) -> String {
        let s = self.0.elapsed().as_secs();
        format!("[{:02}:{:02}]", s / 60, s % 60)
    }
}

async fn show(clock: &Clock, client: &Client) {
    let sel = format!(
        r#"kubernetes_namespace="{NS}",kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)""#
    );
    let rps = prometheus_value(&format!(
        "sum(rate(http_request_duration_seconds_count{{{sel}}}[10s]))"
    ))
    .await;
    let ok = prometheus_value(&format!(
        r#"sum(rate(http_request_duration_seconds_count{{{sel},status!~"5.*"}}[10s])) / sum(rate(http_request_duration_seconds_count{{{sel}}}[10s])) * 100"#
    ))
    .await;
    let p99 = prometheus_value(&format!(
        "histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{{{sel}}}[10s])) by (le)) * 1000"
    ))
    .await;
    let d = Api::<Deployment>::namespaced(client.clone(), NS)
        .get("podinfo")
        .await
        .ok();
    let status = d
        .as_ref()
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let image = d
        .and_then(|d| d.spec)
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default();
    let fmt = |v: Result<f64, String>, digits: usize| {
        v.map_or("-".to_string(), |v| format!("{v:.digits$}"))
    };
    println!(
        "{} {:<36} updated {}/3 available {}/3 | {:>6} req/s  success {:>6}%  p99 {:>6} ms",
        clock.stamp(),
        image.rsplit('/').next().unwrap_or_default(),
        status.updated_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
        fmt(rps, 1),
        fmt(ok, 2),
        fmt(p99, 1),
    );
}

async fn watch_for(clock: &Clock, client: &Client, seconds: u64) {
    for _ in 0..seconds / 3 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        show(clock, client).await;
    }
}

#[tokio::main]
async fn main() {
    let env = cluster().await;
    let clock = Clock(Instant::now());
    let client = client().await;
    println!(
        "\nThe local cluster: KUBECONFIG={}  PROMETHEUS={}",
        env.kubeconfig(),
        env.prometheus()
    );
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    Api::<Namespace>::all(client.clone())
        .patch(
            NS,
            &PatchParams::apply("serin-demo").force(),
            &Patch::Apply(&ns),
        )
        .await
        .expect("creating the demo namespace");

    println!(
        "{} podinfo 6.0.0 (3 replicas) behind Service podinfo and HTTPRoute podinfo, 100 simulated req/s",
        clock.stamp()
    );
    apply::<Deployment>(&client, NS, podinfo("6.0.0", "0", "20")).await;
    apply::<Service>(&client, NS, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo"},
        "spec": {"selector": {"app": "podinfo"}, "ports": [{"name": "http", "port": 9898, "targetPort": "http"}]}}))
    .await;
    apply_httproute(
        &client,
        NS,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "annotations": {"trafficsim.serin.dev/rps": "100"}},
            "spec": {"parentRefs": [{"name": "gateway"}], "hostnames": ["podinfo.local"],
                "rules": [{"backendRefs": [{"name": "podinfo", "port": 9898}]}]}
        }),
    )
    .await;
    watch_for(&clock, &client, 21).await;

    println!(
        "{} rolling out podinfo 6.0.1, which answers 5% of requests with a 500 and takes 80 ms",
        clock.stamp()
    );
    apply::<Deployment>(&client, NS, podinfo("6.0.1", "0.05", "80")).await;
    watch_for(&clock, &client, 24).await;

    println!(
        "{} done. Look around: {}/kubectl --kubeconfig {} -n {NS} get deploy,rs,pods,svc,httproutes",
        clock.stamp(),
        env.get("SERIN_BIN"),
        env.kubeconfig()
    );
    println!("        The cluster stays up for the next run; e2e/cluster/down stops it.");
}
