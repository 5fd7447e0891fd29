//! `make bench-scale N=<n>`: N canaries on one replica of Serin (the binary given, a release build), all
//! given a new image at once, beside a lone canary's rollout in the same run. Prints the time to initialize
//! all, the rollouts' duration p50/p99/max against the lone one's, Serin's API requests per canary and
//! rollout by verb and resource, its peak memory and CPU seconds, the API server's CPU seconds, and how late
//! Serin's scheduled ticks ran. Gateway API routing, interval 5s, steps of 25 up to 50, no metrics: the
//! cost of the controller itself.
//!
//! Usage: serin-bench-scale <path to the serin binary> <N>

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use serin::api::{Canary, Phase};
use serin_e2e::{SerinProcess, apply, client, cluster, cpu_seconds, fresh_namespace, install_crds};

const FLEET: &str = "serin-scale";
const LONE: &str = "serin-scale-lone";

fn deployment(name: &str, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 9898}]}]}}}})
}

fn canary(name: &str) -> Value {
    json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": name},
        "spec": {"provider": "gatewayapi", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898, "gatewayRefs": [{"name": "gateway"}]},
            "analysis": {"interval": "5s", "stepWeight": 25, "maxWeight": 50, "threshold": 1}}})
}

/// Applies `objects` (namespace, json) 16 at a time.
async fn apply_all<K>(client: &Client, objects: Vec<(String, Value)>)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    futures::stream::iter(objects)
        .for_each_concurrent(16, |(ns, o)| {
            let client = client.clone();
            async move {
                apply::<K>(&client, &ns, o).await;
            }
        })
        .await;
}

/// Waits until every Canary of `ns` satisfies `done`; the moment each first did, from `since`.
async fn until_all(
    client: &Client,
    ns: &str,
    n: usize,
    since: Instant,
    timeout: Duration,
    done: impl Fn(&Canary) -> bool,
) -> Vec<Duration> {
    let api: Api<Canary> = Api::namespaced(client.clone(), ns);
    let mut when: HashMap<String, Duration> = HashMap::new();
    while when.len() < n {
        assert!(
            since.elapsed() < timeout,
            "{} of {n} Canaries in {ns} done after {timeout:?}",
            when.len()
        );
        if let Ok(list) = api.list(&ListParams::default()).await {
            for c in list.items.iter().filter(|c| done(c)) {
                when.entry(c.metadata.name.clone().unwrap_or_default())
                    .or_insert_with(|| since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut all: Vec<Duration> = when.into_values().collect();
    all.sort();
    all
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn phase(c: &Canary) -> Option<Phase> {
    c.status.as_ref().and_then(|s| s.phase)
}

/// Serin's API requests by (verb, resource), from /metrics.
async fn requests(serin: &SerinProcess) -> BTreeMap<(String, String), f64> {
    let text = reqwest::get(&serin.metrics_url)
        .await
        .expect("serin's /metrics")
        .text()
        .await
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("serin_api_requests_total{"))
    {
        let label = |key: &str| {
            line.split(&format!("{key}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry((label("verb"), label("resource"))).or_default() += value;
    }
    out
}

/// A rollout of `name` in `ns` to `image`: the time to Succeeded at a new promoted revision.
async fn roll_out(client: &Client, names: &[String], ns: &str, image: &str) -> Vec<Duration> {
    let api: Api<Canary> = Api::namespaced(client.clone(), ns);
    let before: HashMap<String, Option<String>> = api
        .list(&ListParams::default())
        .await
        .expect("listing Canaries")
        .items
        .into_iter()
        .map(|c| {
            (
                c.metadata.name.clone().unwrap_or_default(),
                c.status.and_then(|s| s.last_promoted_spec),
            )
        })
        .collect();
    let start = Instant::now();
    apply_all::<Deployment>(
        client,
        names
            .iter()
            .map(|n| (ns.to_string(), deployment(n, image)))
            .collect(),
    )
    .await;
    until_all(
        client,
        ns,
        names.len(),
        start,
        Duration::from_secs(3600),
        |c| {
            let name = c.metadata.name.clone().unwrap_or_default();
            phase(c) == Some(Phase::Succeeded)
                && c.status.as_ref().and_then(|s| s.last_promoted_spec.clone())
                    != before.get(&name).cloned().flatten()
        },
    )
    .await
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(serin_bin), Some(n)) = (
        args.next(),
        args.next().and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: serin-bench-scale <path to the serin binary> <N>");
        std::process::exit(2);
    };
    let env = cluster().await;
    let client = client().await;
    install_crds(&client).await;
    fresh_namespace(&client, LONE).await;
    fresh_namespace(&client, FLEET).await;
    // One replica for the whole cluster (nothing else runs during a bench).
    let serin = SerinProcess::spawn(
        &serin_bin,
        &[
            "--min-interval=1s".into(),
            format!("--leader-election-namespace={FLEET}"),
            "--identity=bench".into(),
            format!("--metrics-server={}", env.prometheus()),
        ],
        env.kubeconfig(),
        "bench-scale",
    );
    let apiserver_pid: Option<u32> = std::fs::read_to_string(format!(
        "{}/pids/kube-apiserver",
        env.get("SERIN_CLUSTER_STATE")
    ))
    .ok()
    .and_then(|t| t.split_whitespace().next()?.parse().ok());

    // The lone canary, alone.
    let lone = vec!["lone".to_string()];
    apply::<Deployment>(&client, LONE, deployment("lone", "podinfo:1.0.0")).await;
    apply::<Canary>(&client, LONE, canary("lone")).await;
    until_all(
        &client,
        LONE,
        1,
        Instant::now(),
        Duration::from_secs(120),
        |c| phase(c) == Some(Phase::Initialized),
    )
    .await;
    let lone_rollout = roll_out(&client, &lone, LONE, "podinfo:2.0.0").await[0];
    println!("lone canary: rollout {:.1}s", lone_rollout.as_secs_f64());

    // The fleet.
    let names: Vec<String> = (0..n).map(|i| format!("app-{i:05}")).collect();
    let start = Instant::now();
    apply_all::<Deployment>(
        &client,
        names
            .iter()
            .map(|m| (FLEET.to_string(), deployment(m, "podinfo:1.0.0")))
            .collect(),
    )
    .await;
    apply_all::<Canary>(
        &client,
        names
            .iter()
            .map(|m| (FLEET.to_string(), canary(m)))
            .collect(),
    )
    .await;
    let init = until_all(&client, FLEET, n, start, Duration::from_secs(3600), |c| {
        phase(c) == Some(Phase::Initialized)
    })
    .await;
    println!(
        "{n} canaries initialized in {:.1}s",
        init.last().unwrap().as_secs_f64()
    );

    let (cpu_before, api_cpu_before) = (
        cpu_seconds(serin.pid()).unwrap_or(0.0),
        apiserver_pid.and_then(cpu_seconds).unwrap_or(0.0),
    );
    let requests_before = requests(&serin).await;
    let late_before = (
        serin
            .metric("serin_tick_lateness_seconds_sum")
            .await
            .unwrap_or(0.0),
        serin
            .metric("serin_tick_lateness_seconds_count")
            .await
            .unwrap_or(0.0),
    );
    let rollouts = roll_out(&client, &names, FLEET, "podinfo:2.0.0").await;
    let (p50, p99, max) = (
        quantile(&rollouts, 0.5),
        quantile(&rollouts, 0.99),
        *rollouts.last().unwrap(),
    );
    println!(
        "{n} rollouts at once: p50 {:.1}s, p99 {:.1}s, max {:.1}s; the lone one {:.1}s (p99 {:.2}x)",
        p50.as_secs_f64(),
        p99.as_secs_f64(),
        max.as_secs_f64(),
        lone_rollout.as_secs_f64(),
        p99.as_secs_f64() / lone_rollout.as_secs_f64()
    );
    let requests_after = requests(&serin).await;
    println!("Serin's API requests per canary and rollout:");
    for ((verb, resource), after) in &requests_after {
        let before = requests_before
            .get(&(verb.clone(), resource.clone()))
            .copied()
            .unwrap_or(0.0);
        let per = (after - before) / n as f64;
        if per >= 0.005 {
            println!("  {verb:<7} {resource:<16} {per:>7.2}");
        }
    }
    let late = (
        serin
            .metric("serin_tick_lateness_seconds_sum")
            .await
            .unwrap_or(0.0)
            - late_before.0,
        serin
            .metric("serin_tick_lateness_seconds_count")
            .await
            .unwrap_or(0.0)
            - late_before.1,
    );
    println!(
        "scheduled ticks: {} ran {:.0} ms late on average",
        late.1,
        if late.1 > 0.0 {
            1000.0 * late.0 / late.1
        } else {
            0.0
        }
    );
    println!(
        "Serin: peak memory {} MiB, {:.1} CPU seconds over the rollouts; the API server {:.1} CPU seconds",
        serin.peak_memory_kib().unwrap_or(0) / 1024,
        cpu_seconds(serin.pid()).unwrap_or(0.0) - cpu_before,
        apiserver_pid.and_then(cpu_seconds).unwrap_or(0.0) - api_cpu_before
    );
    drop(serin);
    for ns in [FLEET, LONE] {
        let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .delete(ns, &Default::default())
            .await;
    }
}
