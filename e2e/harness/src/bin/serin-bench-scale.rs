//! `make bench-scale N=<n>`: N canaries on one replica of Serin (the binary given, a release build), all
//! given a new image at once, beside a lone canary's rollout in the same run; then the same with Flagger
//! (when its directory is given: e2e/cluster/build-flagger), the same manifests but for the apiVersion.
//! Prints, for each and as a ratio: the time to initialize all, the rollouts' duration p50/p99/max against
//! the lone one's, writes per canary and rollout by resource (from the API server's audit log, the same
//! count for both) and per tick that changed something (a status write), peak memory and CPU seconds, the API server's CPU seconds,
//! and how late Serin's scheduled ticks ran. Gateway API routing, interval 5s, steps of 25 up to 50, no
//! metrics: the cost of the controller itself.
//!
//! With --settled: N Canaries, a hundred to a namespace, initialized over Deployments of
//! `SERIN_BENCH_REPLICAS` replicas (0 by default) and left alone, where a 2-core API server cannot carry N rollouts: the time to initialize all,
//! memory, the CPU and API writes of an idle minute, and a restart (the writes, CPU and peak memory of the
//! new process's first minute, and the time until it is ready).
//!
//! SERIN_BENCH_KEEP=1 keeps the settled fleet at the end and reuses it at the start.
//! SERIN_BENCH_PEER_ONLY=1 runs the peer's part alone (with a Flagger directory), for a fresh cluster each.
//!
//! Usage: serin-bench-scale <serin binary> <N> [<flagger directory>] [--settled]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ApiResource, Patch, PatchParams};
use serde_json::{Value, json};
use serin_e2e::bench::{
    AuditLog, Peer, Process, Write, Writes, apply_all, bench_identity, count, delete_namespaces,
    phase_of, until_all,
};
use serin_e2e::{ClusterEnv, client, cluster, cpu_seconds, install_crds, machine_cpu};

fn deployment(name: &str, image: &str) -> Value {
    deployment_of(name, image, 1)
}

fn deployment_of(name: &str, image: &str, replicas: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 9898}]}]}}}})
}

/// The Canary spec both peers run, as a Flagger user writes it.
fn spec(name: &str) -> Value {
    json!({"provider": "gatewayapi:v1",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "service": {"port": 9898, "gatewayRefs": [{"name": "gateway"}]},
        "analysis": {"interval": "5s", "stepWeight": 25, "maxWeight": 50, "threshold": 1}})
}

fn deployments() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&())
}

/// The benchmark measures controllers, with no metrics: its namespaces' routes get no simulated requests
/// (the traffic simulator's per-namespace default rate), so thousands of routes and their series do not
/// load the test world's simulator and Prometheus.
async fn without_traffic(client: &Client, ns: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"trafficsim.serin.dev/rps": "0"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("annotating the namespace {ns}: {e}"));
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The local cluster's kube-apiserver process, for its CPU seconds.
fn apiserver_pid(env: &ClusterEnv) -> Option<u32> {
    std::fs::read_to_string(format!(
        "{}/pids/kube-apiserver",
        env.get("SERIN_CLUSTER_STATE")
    ))
    .ok()
    .and_then(|t| t.split_whitespace().next()?.parse().ok())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One peer's figures from one run.
struct Figures {
    init: Duration,
    lone: Duration,
    /// The lone canary's writes over its rollout, in order.
    lone_writes: Vec<Write>,
    rollouts: Vec<Duration>,
    /// The fleet's writes from the update to the last Succeeded.
    writes: Writes,
    peak_mib: f64,
    cpu_seconds: f64,
    apiserver_cpu_seconds: f64,
    /// Serin's scheduled ticks over the rollouts: how many, and how late on average.
    lateness: Option<(f64, f64)>,
    /// Serin's reconciles over the rollouts (every tick, whether a timer or a watch brought it).
    reconciles: Option<f64>,
    /// The share of the machine's cores busy over the rollouts: near 1, the test world is at its
    /// capacity, whatever the controller does.
    machine_busy: Option<f64>,
    /// The events created over the rollouts, by reason: which of the writes are told to people.
    events: BTreeMap<String, u64>,
}

impl Figures {
    fn p(&self, q: f64) -> Duration {
        quantile(&self.rollouts, q)
    }
    fn total_writes(&self) -> u64 {
        self.writes.values().sum()
    }
    /// Writes per canary and rollout.
    fn per_rollout(&self, n: usize) -> f64 {
        self.total_writes() as f64 / n as f64
    }
    /// Status writes per canary and rollout: the ticks that changed something.
    fn status_writes(&self, n: usize) -> f64 {
        let status: u64 = self
            .writes
            .iter()
            .filter(|((_, resource), _)| resource == "canaries/status")
            .map(|(_, count)| count)
            .sum();
        status as f64 / n as f64
    }
    /// Writes per tick that changed something (one status write each).
    fn per_tick(&self, n: usize) -> f64 {
        self.per_rollout(n) / self.status_writes(n).max(1.0)
    }
}

/// The controller of `peer`, cluster-wide, as the ServiceAccount of the same name.
async fn start(peer: Peer, env: &ClusterEnv, client: &Client, program: &str) -> (Process, String) {
    let kubeconfig = bench_identity(client, env.kubeconfig(), peer.name()).await;
    let port = free_port();
    let args: Vec<String> = match peer {
        Peer::Serin => vec![
            "run".into(),
            "--min-interval=1s".into(),
            // One replica, as Flagger runs here: no lease to wait out after a restart, and /readyz then
            // says the caches have synced (a replica standing by for a lease is ready at once).
            "--leader-elect=false".into(),
            "--identity=bench".into(),
            format!("--metrics-server={}", env.prometheus()),
            format!("--listen=127.0.0.1:{port}"),
        ],
        // As Flagger's chart runs it, with the Gateway API provider.
        Peer::Flagger => vec![
            format!("-kubeconfig={}", kubeconfig.display()),
            "-mesh-provider=gatewayapi:v1".into(),
            format!("-metrics-server={}", env.prometheus()),
            format!("-port={port}"),
            "-log-level=info".into(),
        ],
    };
    let process = Process::spawn(
        program,
        &args,
        &kubeconfig,
        &format!("bench-scale-{}", peer.name()),
    );
    (process, format!("http://127.0.0.1:{port}/metrics"))
}

/// The metrics page at `url`, read once for all the figures taken at one moment: at 10,000 Canaries it is
/// large, and each read costs the process CPU that would count in the figures.
async fn scrape(url: &str) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

/// The sum of the samples of `name` in a scraped page.
fn metric(page: Option<&str>, name: &str) -> Option<f64> {
    page?
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// Rolls the Deployments `names` of `ns` out to `image`: the time each Canary took to Succeeded at a new
/// promoted revision.
async fn roll_out(
    client: &Client,
    peer: Peer,
    ns: &str,
    names: &[String],
    image: &str,
) -> Vec<Duration> {
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(client.clone(), ns, &peer.canaries());
    let before: std::collections::HashMap<String, Option<String>> = api
        .list(&Default::default())
        .await
        .expect("listing Canaries")
        .items
        .iter()
        .map(|c| {
            (
                c.metadata.name.clone().unwrap_or_default(),
                phase_of(c).1.map(String::from),
            )
        })
        .collect();
    let start = Instant::now();
    apply_all(
        client,
        &deployments(),
        names
            .iter()
            .map(|n| (ns.to_string(), deployment(n, image)))
            .collect(),
    )
    .await;
    until_all(
        client,
        peer,
        &[ns.to_string()],
        names.len(),
        start,
        Duration::from_secs(3600),
        |c| {
            let (phase, promoted) = phase_of(c);
            let name = c.metadata.name.clone().unwrap_or_default();
            phase == Some("Succeeded")
                && promoted.map(String::from) != before.get(&name).cloned().flatten()
        },
    )
    .await
}

async fn initialize(client: &Client, peer: Peer, ns: &str, names: &[String]) -> Duration {
    let canaries: Vec<(String, String)> =
        names.iter().map(|n| (ns.to_string(), n.clone())).collect();
    initialize_with(client, peer, &canaries, 1).await
}

/// Applies a Deployment of `replicas` and a Canary for each (namespace, name) and waits until all are
/// Initialized.
async fn initialize_with(
    client: &Client,
    peer: Peer,
    canaries: &[(String, String)],
    replicas: i32,
) -> Duration {
    let start = Instant::now();
    apply_all(
        client,
        &deployments(),
        canaries
            .iter()
            .map(|(ns, n)| (ns.clone(), deployment_of(n, "podinfo:1.0.0", replicas)))
            .collect(),
    )
    .await;
    apply_all(
        client,
        &peer.canaries(),
        canaries
            .iter()
            .map(|(ns, n)| (ns.clone(), peer.canary(n, &spec(n))))
            .collect(),
    )
    .await;
    let namespaces: BTreeSet<String> = canaries.iter().map(|(ns, _)| ns.clone()).collect();
    let done = until_all(
        client,
        peer,
        &namespaces.into_iter().collect::<Vec<_>>(),
        canaries.len(),
        start,
        // Serin's 10,000 took 34 minutes on 2 cores, the API server's pace.
        Duration::from_secs(7200),
        |c| phase_of(c).0 == Some("Initialized"),
    )
    .await;
    *done.last().expect("at least one canary")
}

async fn measure(peer: Peer, program: &str, n: usize) -> Figures {
    let env = cluster().await;
    let client = client().await;
    let (lone_ns, fleet_ns) = (
        format!("{}-scale-lone", peer.name()),
        format!("{}-scale", peer.name()),
    );
    let cleanup = Duration::from_secs(1800);
    delete_namespaces(&client, &[&lone_ns, &fleet_ns], cleanup).await;
    for ns in [&lone_ns, &fleet_ns] {
        serin_e2e::fresh_namespace(&client, ns).await;
        without_traffic(&client, ns).await;
    }
    let (mut process, metrics_url) = start(peer, env, &client, program).await;
    let apiserver_pid = apiserver_pid(env);
    let audit = AuditLog::of_cluster(env.get("SERIN_CLUSTER_STATE"));

    println!("{}: the lone canary ...", peer.name());
    let lone = vec!["lone".to_string()];
    initialize(&client, peer, &lone_ns, &lone).await;
    assert!(
        process.running(),
        "{} exited: see {}",
        peer.name(),
        process.log.display()
    );
    let lone_mark = audit.mark();
    let lone_rollout = roll_out(&client, peer, &lone_ns, &lone, "podinfo:2.0.0").await[0];
    let mut lone_writes = audit.writes_since(lone_mark, peer.name());
    // Each event created, told by its reason and note.
    let events: std::collections::HashMap<String, String> =
        kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &lone_ns)
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                (
                    e.metadata.name.clone().unwrap_or_default(),
                    format!(
                        "{}: {}",
                        e.reason.unwrap_or_default(),
                        e.note.unwrap_or_default()
                    ),
                )
            })
            .collect();
    for w in &mut lone_writes {
        if let Some(told) = events.get(&w.name) {
            w.name = told.chars().take(110).collect();
        }
    }
    println!(
        "{}: lone rollout {:.1}s",
        peer.name(),
        lone_rollout.as_secs_f64()
    );

    let names: Vec<String> = (0..n).map(|i| format!("app-{i:05}")).collect();
    let init = initialize(&client, peer, &fleet_ns, &names).await;
    println!(
        "{}: {n} canaries initialized in {:.1}s",
        peer.name(),
        init.as_secs_f64()
    );

    // The metrics page is read before the CPU figures start and after they end, so its reads are not in
    // them.
    let page_before = scrape(&metrics_url).await;
    let cpu_before = cpu_seconds(process.pid()).unwrap_or(0.0);
    let api_cpu_before = apiserver_pid.and_then(cpu_seconds).unwrap_or(0.0);
    let machine_before = machine_cpu();
    let mark = audit.mark();
    let updated = k8s_openapi::jiff::Timestamp::now();
    let rollouts = roll_out(&client, peer, &fleet_ns, &names, "podinfo:2.0.0").await;
    let cpu_seconds_used = cpu_seconds(process.pid()).unwrap_or(0.0) - cpu_before;
    let apiserver_cpu_seconds = apiserver_pid.and_then(cpu_seconds).unwrap_or(0.0) - api_cpu_before;
    let machine_after = machine_cpu();
    let page_after = scrape(&metrics_url).await;
    let (before, after) = (page_before.as_deref(), page_after.as_deref());
    let late = |page| {
        (
            metric(page, "serin_tick_lateness_seconds_sum"),
            metric(page, "serin_tick_lateness_seconds_count"),
        )
    };
    let figures = Figures {
        init,
        lone: lone_rollout,
        lone_writes,
        writes: count(&audit.writes_since(mark, peer.name())),
        peak_mib: process.peak_memory_mib().unwrap_or(0.0),
        cpu_seconds: cpu_seconds_used,
        apiserver_cpu_seconds,
        lateness: match (late(before), late(after)) {
            ((Some(s0), Some(c0)), (Some(s1), Some(c1))) if c1 > c0 => {
                Some((c1 - c0, (s1 - s0) / (c1 - c0)))
            }
            _ => None,
        },
        machine_busy: match (machine_before, machine_after) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1 - b0) as f64 / (t1 - t0) as f64)
            }
            _ => None,
        },
        reconciles: match (reconciles(before), reconciles(after)) {
            (Some((c0, _)), Some((c1, _))) => Some(c1 - c0),
            _ => None,
        },
        events: events_since(&client, &fleet_ns, updated).await,
        rollouts,
    };
    println!(
        "{}: {n} rollouts p50 {:.1}s p99 {:.1}s",
        peer.name(),
        figures.p(0.5).as_secs_f64(),
        figures.p(0.99).as_secs_f64()
    );
    drop(process);
    delete_namespaces(&client, &[&lone_ns, &fleet_ns], cleanup).await;
    figures
}

fn flagger_crds(env: &ClusterEnv, dir: &Path) {
    let kubectl = Path::new(env.get("SERIN_BIN")).join("kubectl");
    let status = std::process::Command::new(&kubectl)
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(dir.join("crd.yaml"))
        .env("KUBECONFIG", env.kubeconfig())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running kubectl");
    assert!(status.success(), "applying Flagger's CRDs");
    let established = std::process::Command::new(&kubectl)
        .args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/canaries.flagger.app",
        ])
        .env("KUBECONFIG", env.kubeconfig())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running kubectl");
    assert!(established.success(), "Flagger's Canary CRD established");
}

/// A rollout's writes in order, a line each: what a peer does to the API server per canary.
fn sequence(peer: Peer, writes: &[Write]) {
    println!(
        "{}'s writes over the lone canary's rollout ({}):",
        peer.name(),
        writes.len()
    );
    for w in writes {
        let at = w.at.get(11..23).unwrap_or(&w.at);
        println!("  {at} {:<6} {:<28} {}", w.verb, w.resource, w.name);
    }
}

fn row(label: &str, serin: String, flagger: Option<String>, ratio: Option<f64>) {
    println!(
        "  {label:<38} {serin:>10} {:>10} {:>8}",
        flagger.unwrap_or_default(),
        ratio.map(|r| format!("{r:.2}x")).unwrap_or_default()
    );
}

/// A row of one figure, Serin's and Flagger's, with their ratio.
fn figure(serin: f64, flagger: Option<f64>, label: &str, unit: &str, digits: usize) {
    row(
        label,
        format!("{serin:.digits$}{unit}"),
        flagger.map(|p| format!("{p:.digits$}{unit}")),
        flagger.filter(|_| serin > 0.0).map(|p| p / serin),
    );
}

/// A report's column heading for `peer`.
fn title(peer: Peer) -> &'static str {
    match peer {
        Peer::Serin => "Serin",
        Peer::Flagger => "Flagger",
    }
}

/// The figures of `first` (Serin, or the peer run alone), beside the peer's when given.
fn report(n: usize, (first, serin): (Peer, &Figures), flagger: Option<&Figures>) {
    println!();
    println!(
        "N = {n}, one replica, interval 5s, steps of 25 to 50, no metrics; ratio = Flagger / Serin"
    );
    row(
        "",
        title(first).into(),
        flagger.map(|_| "Flagger".into()),
        None,
    );
    let seconds = |f: &dyn Fn(&Figures) -> f64, label: &str, unit: &str, digits: usize| {
        figure(f(serin), flagger.map(f), label, unit, digits)
    };
    seconds(&|f| f.init.as_secs_f64(), "initialize all", "s", 1);
    seconds(&|f| f.lone.as_secs_f64(), "lone canary's rollout", "s", 1);
    seconds(&|f| f.p(0.5).as_secs_f64(), "rollout p50", "s", 1);
    seconds(&|f| f.p(0.99).as_secs_f64(), "rollout p99", "s", 1);
    seconds(
        &|f| f.rollouts.last().unwrap().as_secs_f64(),
        "rollout max",
        "s",
        1,
    );
    seconds(
        &|f| f.p(0.99).as_secs_f64() / f.lone.as_secs_f64(),
        "rollout p99 / lone canary's",
        "x",
        2,
    );
    seconds(
        &|f| f.per_rollout(n),
        "writes per canary and rollout",
        "",
        1,
    );
    seconds(
        &|f| f.status_writes(n),
        "status writes (ticks that changed)",
        "",
        1,
    );
    seconds(&|f| f.per_tick(n), "writes per tick that changed", "", 2);
    seconds(&|f| f.peak_mib, "peak memory (RSS)", " MiB", 0);
    seconds(&|f| f.cpu_seconds, "CPU over the rollouts", "s", 1);
    seconds(
        &|f| f.apiserver_cpu_seconds,
        "API server CPU over the rollouts",
        "s",
        1,
    );
    seconds(
        &|f| 100.0 * f.machine_busy.unwrap_or(0.0),
        "machine's cores busy over the rollouts",
        "%",
        0,
    );
    if let Some((count, mean)) = serin.lateness {
        row(
            "Serin's scheduled ticks, mean lateness",
            format!("{:.0} ms", mean * 1000.0),
            None,
            None,
        );
        println!("  ({count} scheduled ticks)");
    }
    if let Some(reconciles) = serin.reconciles {
        // Every tick, the ones that changed nothing too: the "writes per canary per tick".
        row(
            "Serin's reconciles per canary and rollout",
            format!("{:.1}", reconciles / n as f64),
            None,
            None,
        );
        row(
            "Serin's writes per reconcile",
            format!("{:.2}", serin.total_writes() as f64 / reconciles.max(1.0)),
            None,
            None,
        );
    }
    println!("  writes per canary and rollout, by verb and resource:");
    per_canary_rows(
        n,
        (serin, flagger),
        |f| &f.writes,
        |k| format!("{} {}", k.0, k.1),
    );
    println!("  events about the canaries per rollout, by reason (those the API server kept):");
    per_canary_rows(n, (serin, flagger), |f| &f.events, String::clone);
}

/// One row per key of the counts `of` takes from each peer's figures, per canary.
fn per_canary_rows<K: Ord>(
    n: usize,
    (serin, flagger): (&Figures, Option<&Figures>),
    of: impl Fn(&Figures) -> &BTreeMap<K, u64>,
    label: impl Fn(&K) -> String,
) {
    let keys: BTreeSet<&K> = of(serin)
        .keys()
        .chain(flagger.iter().flat_map(|f| of(f).keys()))
        .collect();
    for key in keys {
        let per = |f: &Figures| *of(f).get(key).unwrap_or(&0) as f64 / n as f64;
        row(
            &format!("    {}", label(key)),
            format!("{:.2}", per(serin)),
            flagger.map(|f| format!("{:.2}", per(f))),
            None,
        );
    }
}

/// The events about Canaries in `ns` first seen at or after `since` (the controller's own: the
/// scheduler's and the Deployment controller's are about pods and ReplicaSets), counted by reason
/// (Flagger's all say "Synced": its note's first words tell them apart).
async fn events_since(
    client: &Client,
    ns: &str,
    since: k8s_openapi::jiff::Timestamp,
) -> BTreeMap<String, u64> {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut by_reason = BTreeMap::new();
    for e in events {
        let first = e
            .event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.deprecated_first_timestamp.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let about_canary = e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Canary");
        if first.is_none_or(|t| t < since) || !about_canary {
            continue;
        }
        let reason = e.reason.unwrap_or_default();
        let reason = if reason == "Synced" {
            let note = e.note.unwrap_or_default();
            format!(
                "Synced: {}",
                note.split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        } else {
            reason
        };
        *by_reason.entry(reason).or_insert(0) += 1;
    }
    by_reason
}

/// Serin's reconciles so far and their summed time, from a scraped page (None for Flagger, which has no
/// such metric).
fn reconciles(page: Option<&str>) -> Option<(f64, f64)> {
    Some((
        metric(page, "serin_reconcile_duration_seconds_count")?,
        metric(page, "serin_reconcile_duration_seconds_sum")?,
    ))
}

/// One peer's figures for a settled fleet.
struct Settled {
    init: Duration,
    rss_mib: f64,
    peak_mib: f64,
    idle_cpu_seconds: f64,
    idle_writes: u64,
    restart_ready: Option<Duration>,
    restart_peak_mib: f64,
    restart_cpu_seconds: f64,
    restart_writes: u64,
    restart_apiserver_cpu_seconds: f64,
}

const IDLE: Duration = Duration::from_secs(60);

/// Settled Canaries in one namespace.
const PER_NAMESPACE: usize = 100;

/// Whether the process at `metrics_url`'s address says it is ready (Serin's /readyz; Flagger has none, so
/// None).
async fn ready(peer: Peer, metrics_url: &str) -> Option<bool> {
    match peer {
        Peer::Serin => Some(
            reqwest::get(metrics_url.replace("/metrics", "/readyz"))
                .await
                .is_ok_and(|r| r.status().is_success()),
        ),
        Peer::Flagger => None,
    }
}

async fn settle(peer: Peer, program: &str, n: usize) -> Settled {
    let env = cluster().await;
    let client = client().await;
    // A hundred Canaries a namespace, as a fleet of teams would have them: the controller-manager's
    // deployment controller lists a namespace's ReplicaSets for each Deployment it syncs, so 10,000 in one
    // namespace made the test world, not the controllers, the bottleneck.
    let namespaces: Vec<String> = (0..n.div_ceil(PER_NAMESPACE))
        .map(|i| format!("{}-settled-{i:03}", peer.name()))
        .collect();
    let namespace_refs: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let cleanup = Duration::from_secs(3600);
    // SERIN_BENCH_KEEP=1: the fleet is left in place at the end and taken as it is at the start (the
    // initialization then only re-applies it), to measure a change of Serin's memory in minutes.
    let keep = std::env::var("SERIN_BENCH_KEEP").is_ok_and(|k| k == "1");
    if !keep {
        delete_namespaces(&client, &namespace_refs, cleanup).await;
    }
    for ns in &namespaces {
        if keep {
            serin_e2e::namespace_kept(&client, ns).await;
        } else {
            serin_e2e::fresh_namespace(&client, ns).await;
        }
        without_traffic(&client, ns).await;
    }
    let replicas: i32 = std::env::var("SERIN_BENCH_REPLICAS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let apiserver_pid = apiserver_pid(env);
    let audit = AuditLog::of_cluster(env.get("SERIN_CLUSTER_STATE"));
    let (mut process, metrics_url) = start(peer, env, &client, program).await;
    let canaries: Vec<(String, String)> = (0..n)
        .map(|i| (namespaces[i / PER_NAMESPACE].clone(), format!("app-{i:05}")))
        .collect();
    let init = initialize_with(&client, peer, &canaries, replicas).await;
    assert!(
        process.running(),
        "{} exited: see {}",
        peer.name(),
        process.log.display()
    );
    println!(
        "{}: {n} canaries initialized in {:.1}s",
        peer.name(),
        init.as_secs_f64()
    );
    // Let the last writes and their echoes pass, then an idle minute.
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Serin's metrics page is read outside the minute: rendering it for 10,000 Canaries is not idle work.
    let reconciles0 = reconciles(scrape(&metrics_url).await.as_deref());
    let (cpu0, mark) = (cpu_seconds(process.pid()).unwrap_or(0.0), audit.mark());
    tokio::time::sleep(IDLE).await;
    let idle_cpu_seconds = cpu_seconds(process.pid()).unwrap_or(0.0) - cpu0;
    // What Serin did with its idle minute: its reconciles (the settled Canaries' half-hourly look, and
    // whatever the watches brought) and their time.
    if let (Some((c0, s0)), Some((c1, s1))) = (
        reconciles0,
        reconciles(scrape(&metrics_url).await.as_deref()),
    ) {
        println!(
            "{}: idle minute: {:.0} reconciles, {:.2} s in them",
            peer.name(),
            c1 - c0,
            s1 - s0
        );
    }
    let idle_writes = audit.writes_since(mark, peer.name()).len() as u64;
    let (rss_mib, peak_mib) = (
        process.memory_mib().unwrap_or(0.0),
        process.peak_memory_mib().unwrap_or(0.0),
    );
    println!(
        "{}: idle minute: {idle_cpu_seconds:.2} CPU s, {idle_writes} writes; {rss_mib:.0} MiB",
        peer.name()
    );

    // A restart over the settled fleet.
    drop(process);
    let mark = audit.mark();
    let api_cpu0 = apiserver_pid.and_then(cpu_seconds).unwrap_or(0.0);
    let restarted = Instant::now();
    let (process, metrics_url) = start(peer, env, &client, program).await;
    let mut restart_ready = None;
    while restarted.elapsed() < IDLE {
        if restart_ready.is_none() && ready(peer, &metrics_url).await == Some(true) {
            restart_ready = Some(restarted.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let figures = Settled {
        init,
        rss_mib,
        peak_mib,
        idle_cpu_seconds,
        idle_writes,
        restart_ready,
        restart_peak_mib: process.peak_memory_mib().unwrap_or(0.0),
        restart_cpu_seconds: cpu_seconds(process.pid()).unwrap_or(0.0),
        restart_writes: audit.writes_since(mark, peer.name()).len() as u64,
        restart_apiserver_cpu_seconds: apiserver_pid.and_then(cpu_seconds).unwrap_or(0.0)
            - api_cpu0,
    };
    drop(process);
    if !keep {
        delete_namespaces(&client, &namespace_refs, cleanup).await;
    }
    figures
}

/// The settled figures of `first` (Serin, or the peer run alone), beside the peer's when given.
fn report_settled(n: usize, (first, serin): (Peer, &Settled), flagger: Option<&Settled>) {
    println!();
    println!(
        "{n} settled Canaries, one replica, Deployments at {} replicas; ratio = Flagger / Serin",
        std::env::var("SERIN_BENCH_REPLICAS").unwrap_or_else(|_| "0".into())
    );
    row(
        "",
        title(first).into(),
        flagger.map(|_| "Flagger".into()),
        None,
    );
    let line = |f: &dyn Fn(&Settled) -> f64, label: &str, unit: &str, digits: usize| {
        figure(f(serin), flagger.map(f), label, unit, digits)
    };
    line(&|f| f.init.as_secs_f64(), "initialize all", "s", 1);
    line(&|f| f.rss_mib, "memory settled (RSS)", " MiB", 0);
    line(&|f| f.peak_mib, "peak memory (RSS)", " MiB", 0);
    line(
        &|f| 100.0 * f.idle_cpu_seconds / IDLE.as_secs_f64(),
        "CPU idle, % of a core",
        "%",
        2,
    );
    line(
        &|f| f.idle_writes as f64,
        "writes in the idle minute",
        "",
        0,
    );
    line(
        &|f| f.restart_writes as f64,
        "restart: writes in its first minute",
        "",
        0,
    );
    line(
        &|f| f.restart_cpu_seconds,
        "restart: CPU in its first minute",
        "s",
        1,
    );
    line(
        &|f| f.restart_apiserver_cpu_seconds,
        "restart: API server CPU then",
        "s",
        1,
    );
    line(&|f| f.restart_peak_mib, "restart: peak memory", " MiB", 0);
    if let Some(r) = serin.restart_ready {
        row(
            "restart: Serin ready (caches synced)",
            format!("{:.1}s", r.as_secs_f64()),
            None,
            None,
        );
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(serin_bin), Some(n)) = (
        args.next(),
        args.next().and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: serin-bench-scale <serin binary> <N> [<flagger directory>]");
        std::process::exit(2);
    };
    let rest: Vec<String> = args.collect();
    let settled = rest.iter().any(|a| a == "--settled");
    let flagger_dir = rest.into_iter().find(|a| a != "--settled");
    let env = cluster().await;
    let client = client().await;
    install_crds(&client).await;
    // Flagger's binary, its CRDs installed.
    let flagger_program = flagger_dir.map(|dir| {
        flagger_crds(env, Path::new(&dir));
        Path::new(&dir).join("flagger").display().to_string()
    });
    // SERIN_BENCH_PEER_ONLY=1: the peer's part alone (Serin's alone is PEER=none), each on a fresh
    // cluster. At 10,000 the 2-core API server deletes a fleet at about 160 Canaries a minute, so a fresh
    // cluster (`e2e/cluster/down`, then `up`) for each part saves the hour of deleting Serin's fleet
    // before the peer's.
    let peer_only = std::env::var("SERIN_BENCH_PEER_ONLY").is_ok_and(|o| o == "1");
    if settled {
        if let Some(program) = &flagger_program
            && peer_only
        {
            let flagger = settle(Peer::Flagger, program, n).await;
            report_settled(n, (Peer::Flagger, &flagger), None);
            return;
        }
        let serin = settle(Peer::Serin, &serin_bin, n).await;
        // Serin's figures as soon as they are known: at 10,000 the peer's part can take longer than one
        // sitting, and a run stopped there kept nothing of Serin's restart.
        if flagger_program.is_some() {
            report_settled(n, (Peer::Serin, &serin), None);
        }
        let flagger = match &flagger_program {
            Some(program) => Some(settle(Peer::Flagger, program, n).await),
            None => None,
        };
        report_settled(n, (Peer::Serin, &serin), flagger.as_ref());
        return;
    }
    if let Some(program) = &flagger_program
        && peer_only
    {
        let flagger = measure(Peer::Flagger, program, n).await;
        sequence(Peer::Flagger, &flagger.lone_writes);
        report(n, (Peer::Flagger, &flagger), None);
        return;
    }
    let serin = measure(Peer::Serin, &serin_bin, n).await;
    if flagger_program.is_some() {
        report(n, (Peer::Serin, &serin), None);
    }
    let flagger = match &flagger_program {
        Some(program) => Some(measure(Peer::Flagger, program, n).await),
        None => None,
    };
    sequence(Peer::Serin, &serin.lone_writes);
    if let Some(f) = &flagger {
        sequence(Peer::Flagger, &f.lone_writes);
    }
    report(n, (Peer::Serin, &serin), flagger.as_ref());
}
