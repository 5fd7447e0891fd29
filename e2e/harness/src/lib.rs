//! Harness for end-to-end tests against the local cluster (e2e/cluster/up): a real kube-apiserver with kwok
//! nodes, Prometheus, and the traffic simulator. A test process brings the cluster up once (reusing one that
//! is already up) and every test in it shares it, each in a namespace of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiResource;
use kube::{Api, Client, Config};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

pub mod apps;
pub mod bench;
pub mod gitops;
pub mod helm;
pub mod loadtester;
pub mod podinfo;
pub mod receiver;
pub mod rollout;

/// The repository's root.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the harness lives in e2e/harness")
}

/// What `e2e/cluster/up` printed: KUBECONFIG, PROMETHEUS, TRAFFICSIM, LOADTESTER, SERIN_CLUSTER_STATE, SERIN_BIN.
#[derive(Debug, Clone)]
pub struct ClusterEnv {
    pub vars: HashMap<String, String>,
}

impl ClusterEnv {
    pub fn get(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("e2e/cluster/up printed no {key}"))
    }
    pub fn kubeconfig(&self) -> &str {
        self.get("KUBECONFIG")
    }
    pub fn prometheus(&self) -> &str {
        self.get("PROMETHEUS")
    }
    /// The traffic simulator's load-tester API (Flagger's flagger-loadtester, with simulated load).
    pub fn loadtester(&self) -> &str {
        self.get("LOADTESTER")
    }
}

static ENV: OnceCell<ClusterEnv> = OnceCell::const_new();

/// Runs one of the local cluster's scripts, `e2e/cluster/<script> <action>` (`prometheus stop`, say), and
/// fails the test if it fails.
pub fn cluster_script(script: &str, action: &str) {
    let path = repo_dir().join("e2e/cluster").join(script);
    let ok = std::process::Command::new(&path)
        .arg(action)
        .status()
        .unwrap_or_else(|e| panic!("running {} {action}: {e}", path.display()))
        .success();
    assert!(ok, "e2e/cluster/{script} {action} failed");
}

/// Starts a component of the local cluster again (`e2e/cluster/<script> start`) when dropped, however
/// the test that stopped it ends.
pub struct StartOnDrop(pub &'static str);

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        cluster_script(self.0, "start");
    }
}

/// The local cluster, brought up on first use (or found already up).
pub async fn cluster() -> &'static ClusterEnv {
    ENV.get_or_init(|| async {
        let up = repo_dir().join("e2e/cluster/up");
        let out = tokio::process::Command::new(&up)
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {}: {e}", up.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} failed ({}):\n{stdout}",
            up.display(),
            out.status
        );
        let vars = stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ClusterEnv { vars }
    })
    .await
}

/// A client for the local cluster as its admin.
pub async fn client() -> Client {
    let env = cluster().await;
    let kubeconfig =
        Kubeconfig::read_from(env.kubeconfig()).expect("reading the local cluster's kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("building a client")
}

static NAMESPACES: AtomicU32 = AtomicU32::new(0);

/// Creates a namespace of its own for one test: `<prefix>-<pid>-<n>`.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NAMESPACES.fetch_add(1, Ordering::Relaxed)
    );
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating a namespace");
    name
}

/// CPU seconds a process has used (user and system, from /proc/<pid>/stat), None once it is gone.
/// A field of /proc/<pid>/status given in kB (VmHWM:, VmRSS:).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based), in clock ticks of 1/100 s.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The whole machine's CPU time so far, busy and in all, in clock ticks (the first line of /proc/stat): over an
/// interval, the share of all cores that something used.
pub fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// The namespace `name`, new: a previous run's is deleted first, and waited for (the demos' own namespaces).
pub async fn fresh_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await.ok().flatten().is_some() {
        println!("removing the previous run's namespace {name} ...");
        let _ = api.delete(name, &Default::default()).await;
        wait_for(
            &format!("the old namespace {name} to go"),
            Duration::from_secs(120),
            Duration::from_millis(500),
            || async {
                match api.get_opt(name).await {
                    Ok(None) => Ok(()),
                    other => Err(format!("{:?}", other.map(|n| n.map(|n| n.status)))),
                }
            },
        )
        .await;
    }
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating the namespace {name}: {e}"));
}

/// The namespace `name` as it is (a benchmark's kept fleet); a fresh one if it is missing or going.
pub async fn namespace_kept(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let existing = api
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("reading the namespace {name}: {e}"));
    let terminating =
        |ns: &Namespace| ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if existing.as_ref().is_none_or(terminating) {
        fresh_namespace(client, name).await;
    }
}

/// Server-side applies a typed object from JSON under the test's field manager.
pub async fn apply<K>(client: &Client, namespace: &str, object: Value) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let name = object["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
        .to_string();
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply("serin-e2e").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {namespace}/{name}: {e}", K::kind(&())))
}

pub fn httproute_resource() -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    }
}

/// Server-side applies an HTTPRoute given as JSON.
pub async fn apply_httproute(client: &Client, namespace: &str, object: Value) -> DynamicObject {
    let ar = httproute_resource();
    let name = object["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
        .to_string();
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &ar)
        .patch(
            &name,
            &PatchParams::apply("serin-e2e").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying HTTPRoute {namespace}/{name}: {e}"))
}

/// Sets annotations (the traffic simulator's) on an object Serin writes, under the tests' own field
/// manager: Serin owns only the fields it sets, so it keeps them.
pub async fn annotate(
    client: &Client,
    namespace: &str,
    ar: &ApiResource,
    name: &str,
    annotations: Value,
) {
    let patch = json!({"apiVersion": ar.api_version, "kind": ar.kind,
        "metadata": {"name": name, "annotations": annotations}});
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, ar)
        .patch(
            name,
            &PatchParams::apply("serin-e2e"),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap_or_else(|e| panic!("annotating {} {namespace}/{name}: {e}", ar.kind));
}

/// Polls `check` every `every` until it returns Some, or fails after `timeout` with the last state seen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// The notes of the events in `namespace` with this reason, oldest first.
pub async fn event_notes(client: &Client, namespace: &str, reason: &str) -> Vec<String> {
    use k8s_openapi::api::events::v1::Event;
    let mut events: Vec<Event> = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("listing the events of {namespace}: {e}"))
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect();
    events.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
    events.into_iter().filter_map(|e| e.note).collect()
}

/// An instant query's result: the value of each sample in the vector (or the scalar).
pub async fn prometheus_query(expr: &str) -> anyhow::Result<Vec<f64>> {
    prometheus_query_at(expr, None).await
}

/// An instant query's result at `at` (seconds since the epoch; now when None).
pub async fn prometheus_query_at(expr: &str, at: Option<f64>) -> anyhow::Result<Vec<f64>> {
    let base = cluster().await.prometheus();
    let mut params = vec![("query", expr.to_string())];
    if let Some(at) = at {
        params.push(("time", format!("{at:.3}")));
    }
    let body: Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/query"))
        .query(&params)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("querying Prometheus at {base}"))?
        .json()
        .await?;
    if body["status"] != "success" {
        bail!("Prometheus refused {expr:?}: {}", body["error"]);
    }
    let value = |v: &Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok());
    let data = &body["data"];
    Ok(match data["resultType"].as_str() {
        Some("scalar") => value(&data["result"]).into_iter().collect(),
        _ => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| value(&s["value"]))
            .collect(),
    })
}

/// The single value of an instant query, or an error saying what came back instead.
pub async fn prometheus_value(expr: &str) -> Result<f64, String> {
    match prometheus_query(expr).await {
        Ok(v) if v.len() == 1 && v[0].is_finite() => Ok(v[0]),
        Ok(v) => Err(format!("{expr} returned {v:?}")),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The minimum analysis interval of the CRDs installed for end-to-end tests: low, so canaries step fast.
pub const E2E_MIN_INTERVAL: Duration = Duration::from_secs(1);

static CRDS: OnceCell<()> = OnceCell::const_new();

/// Applies Serin's CRDs as the test binaries use them (E2E_MIN_INTERVAL), under the field manager
/// serin-e2e, whatever another manager set; returns their names.
pub async fn apply_crds(client: &Client) -> Vec<String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for crd in serin::api::crds::crds(E2E_MIN_INTERVAL) {
        let name = crd.metadata.name.clone().expect("CRDs have names");
        api.patch(
            &name,
            &PatchParams::apply("serin-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        names.push(name);
    }
    names
}

/// Installs Serin's CRDs (once per test process) and waits until the API server serves them.
pub async fn install_crds(client: &Client) {
    CRDS.get_or_init(|| async {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for name in apply_crds(client).await {
            wait_for(
                &format!("CRD {name} to be established"),
                Duration::from_secs(30),
                Duration::from_millis(200),
                || async {
                    let crd = api.get(&name).await.map_err(|e| e.to_string())?;
                    let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                    if conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                    {
                        Ok(())
                    } else {
                        Err(format!("{conditions:?}"))
                    }
                },
            )
            .await;
        }
    })
    .await;
}

/// A `serin run` process against the local cluster, scoped to one namespace (its Lease lives there too).
/// Killed when dropped.
pub struct SerinProcess {
    child: std::process::Child,
    pub metrics_url: String,
    pub log: PathBuf,
    /// The Prometheus target file written by [`SerinProcess::scraped`].
    target_file: Option<PathBuf>,
}

impl SerinProcess {
    /// Starts the controller binary at `bin` for `namespace`, as replica `identity`.
    pub async fn start(bin: &str, namespace: &str, identity: &str) -> Self {
        let env = cluster().await;
        let args: Vec<String> = [
            "--min-interval",
            "1s",
            "--namespace",
            namespace,
            "--leader-election-namespace",
            namespace,
            "--identity",
            identity,
            "--metrics-server",
            env.prometheus(),
        ]
        .map(String::from)
        .into();
        Self::spawn(
            bin,
            &args,
            env.kubeconfig(),
            &format!("{namespace}-{identity}"),
        )
    }

    /// Runs `serin run` with `args` (and a loopback --listen of its own) as the user of `kubeconfig`;
    /// its output goes to serin-`log_name`.log in the temporary directory.
    pub fn spawn(bin: &str, args: &[String], kubeconfig: &str, log_name: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::env::temp_dir().join(format!("serin-{log_name}.log"));
        let out = std::fs::File::create(&log).expect("controller log file");
        let child = std::process::Command::new(bin)
            .arg("run")
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        SerinProcess {
            child,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            log,
            target_file: None,
        }
    }

    /// The process's peak resident memory so far, in KiB (Linux's VmHWM).
    pub fn peak_memory_kib(&self) -> Option<u64> {
        proc_status_kib(self.child.id(), "VmHWM:")
    }

    /// Sends `signal` (as `kill -<signal>` names it: STOP, CONT, TERM) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {}", self.child.id());
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends the process at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The sum of a metric's samples on /metrics (None while it does not serve).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        self.metric_where(name, &[]).await
    }

    /// The sum of a metric's samples whose labels include each of `labels` (as `verb="read"`).
    pub async fn metric_where(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let text = reqwest::get(&self.metrics_url)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        Some(values.iter().sum())
    }
}

impl SerinProcess {
    /// Has the cluster's Prometheus scrape this process's /metrics (job "serin"), and waits for the first
    /// scrape. The target goes when the process is dropped.
    pub async fn scraped(&mut self) {
        let env = cluster().await;
        let address = self
            .metrics_url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_string();
        let dir = Path::new(env.get("SERIN_CLUSTER_STATE")).join("prometheus/serin-targets");
        let file = dir.join(format!("{}.json", address.replace(':', "-")));
        std::fs::write(&file, json!([{"targets": [address]}]).to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        self.target_file = Some(file);
        let up = format!(r#"up{{job="serin", instance="{address}"}} == 1"#);
        wait_for(
            "Prometheus to scrape serin",
            Duration::from_secs(30),
            Duration::from_millis(500),
            || async {
                match prometheus_query(&up).await {
                    Ok(v) if !v.is_empty() => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
}

impl Drop for SerinProcess {
    fn drop(&mut self) {
        self.kill();
        if let Some(file) = self.target_file.take() {
            let _ = std::fs::remove_file(file);
        }
    }
}
