//! What `make bench-scale` needs to run Serin and a peer (Flagger) the same way against the local cluster:
//! each as a ServiceAccount of [`BENCH_NAMESPACE`] (whose writes the API server's audit log records, the
//! same count for both), the same Canary manifest but for its apiVersion, and the same figures read from
//! the outside: time to a phase by watch, peak memory and CPU from /proc, writes from the audit log.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// The namespace whose ServiceAccounts' writes the API server logs (e2e/cluster/lib.sh's audit policy).
pub const BENCH_NAMESPACE: &str = "serin-bench";

/// A progressive-delivery controller under measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Serin,
    Flagger,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Serin => "serin",
            Peer::Flagger => "flagger",
        }
    }

    /// Its Canary kind.
    pub fn canaries(self) -> ApiResource {
        let group = match self {
            Peer::Serin => "serin.dev",
            Peer::Flagger => "flagger.app",
        };
        ApiResource {
            group: group.into(),
            version: "v1beta1".into(),
            api_version: format!("{group}/v1beta1"),
            kind: "Canary".into(),
            plural: "canaries".into(),
        }
    }

    /// `spec` as a Canary named `name` of this peer: Flagger's manifest, its apiVersion changed for Serin.
    pub fn canary(self, name: &str, spec: &Value) -> Value {
        json!({"apiVersion": self.canaries().api_version, "kind": "Canary", "metadata": {"name": name},
            "spec": spec})
    }
}

/// A Canary's phase and last promoted revision, as either peer writes them.
pub fn phase_of(c: &DynamicObject) -> (Option<&str>, Option<&str>) {
    let status = &c.data["status"];
    (
        status["phase"].as_str(),
        status["lastPromotedSpec"].as_str(),
    )
}

/// A kubeconfig file for the ServiceAccount `name` of [`BENCH_NAMESPACE`], bound to cluster-admin: the
/// cluster's kubeconfig with its client certificate replaced by the account's token (a certificate would
/// be taken first, and the writes would not be the account's).
pub async fn bench_identity(client: &Client, cluster_kubeconfig: &str, name: &str) -> PathBuf {
    let ssa = PatchParams::apply("serin-bench").force();
    Api::<Namespace>::all(client.clone())
        .patch(
            BENCH_NAMESPACE,
            &ssa,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": BENCH_NAMESPACE}})),
        )
        .await
        .expect("the bench namespace");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), BENCH_NAMESPACE);
    accounts
        .patch(
            name,
            &ssa,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": name}})),
        )
        .await
        .expect("the bench ServiceAccount");
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            &format!("serin-bench-{name}"),
            &ssa,
            &Patch::Apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding", "metadata": {"name": format!("serin-bench-{name}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": name,
                    "namespace": BENCH_NAMESPACE}]})),
        )
        .await
        .expect("the bench ClusterRoleBinding");
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 24 * 3600}});
    let issued: Value = accounts
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .expect("a token for the bench ServiceAccount");
    let token = issued["status"]["token"]
        .as_str()
        .expect("the token request's token")
        .to_string();
    let mut config = Kubeconfig::read_from(cluster_kubeconfig).expect("the cluster's kubeconfig");
    for named in &mut config.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.client_certificate = None;
            auth.client_certificate_data = None;
            auth.client_key = None;
            auth.client_key_data = None;
            auth.token = Some(token.clone().into());
        }
    }
    let file = std::env::temp_dir().join(format!("serin-bench-{name}.kubeconfig"));
    // JSON is YAML: both clients read it.
    std::fs::write(
        &file,
        serde_json::to_vec(&config).expect("serializing the kubeconfig"),
    )
    .expect("writing the bench kubeconfig");
    file
}

/// A controller process, killed when dropped.
pub struct Process {
    child: std::process::Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(program: &str, args: &[String], kubeconfig: &Path, log_name: &str) -> Process {
        let log = std::env::temp_dir().join(format!("{log_name}.log"));
        let out = std::fs::File::create(&log).expect("controller log file");
        let child = std::process::Command::new(program)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Process { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far, in MiB (Linux's VmHWM).
    pub fn peak_memory_mib(&self) -> Option<f64> {
        self.status_mib("VmHWM:")
    }

    /// Resident memory now, in MiB.
    pub fn memory_mib(&self) -> Option<f64> {
        self.status_mib("VmRSS:")
    }

    /// A field of /proc/<pid>/status given in kB, in MiB.
    fn status_mib(&self, field: &str) -> Option<f64> {
        crate::proc_status_kib(self.pid(), field).map(|kib| kib as f64 / 1024.0)
    }

    /// Whether it still runs (a controller that exits at start is a failed bench, not a fast one).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Watches `ns`'s Canaries of `peer` until `n` of them satisfy `done`; the moment each first did, from
/// `since`, sorted. A watch, not a poll: listing a thousand Canaries every moment would load the API
/// server the bench measures.
pub async fn until_all(
    client: &Client,
    peer: Peer,
    namespaces: &[String],
    n: usize,
    since: Instant,
    timeout: Duration,
    done: impl Fn(&DynamicObject) -> bool,
) -> Vec<Duration> {
    let api: Api<DynamicObject> = match namespaces {
        [ns] => Api::namespaced_with(client.clone(), ns, &peer.canaries()),
        _ => Api::all_with(client.clone(), &peer.canaries()),
    };
    let mut when: HashMap<String, Duration> = HashMap::new();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects();
    futures::pin_mut!(stream);
    let deadline = tokio::time::Instant::from_std(since + timeout);
    while when.len() < n {
        let next = tokio::time::timeout_at(deadline, stream.try_next()).await;
        match next {
            Err(_) => panic!(
                "{} of {n} {} Canaries in {namespaces:?} done after {timeout:?}",
                when.len(),
                peer.name()
            ),
            Ok(Ok(Some(c))) => {
                let ns = c.namespace().unwrap_or_default();
                if namespaces.contains(&ns) && done(&c) {
                    when.entry(format!("{ns}/{}", c.name_any()))
                        .or_insert_with(|| since.elapsed());
                }
            }
            Ok(Ok(None)) => panic!("the Canary watch ended"),
            // The watcher retries with backoff; an error is only said.
            Ok(Err(e)) => eprintln!("watching Canaries: {e}"),
        }
    }
    let mut all: Vec<Duration> = when.into_values().collect();
    all.sort();
    all
}

/// Applies `objects` (namespace, manifest) of kind `ar`, 16 at a time.
pub async fn apply_all(client: &Client, ar: &ApiResource, objects: Vec<(String, Value)>) {
    futures::stream::iter(objects)
        .for_each_concurrent(16, |(ns, o)| {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, ar);
            async move {
                let name = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                api.patch(
                    &name,
                    &PatchParams::apply("serin-bench").force(),
                    &Patch::Apply(&o),
                )
                .await
                .unwrap_or_else(|e| panic!("applying {} {ns}/{name}: {e}", ar.kind));
            }
        })
        .await;
}

/// The API server's audit log of the bench identities' writes.
pub struct AuditLog {
    path: PathBuf,
}

/// Writes by (verb, resource or resource/subresource).
pub type Writes = BTreeMap<(String, String), u64>;

/// One logged write.
#[derive(Debug, Clone)]
pub struct Write {
    pub verb: String,
    /// resource, or resource/subresource.
    pub resource: String,
    pub name: String,
    /// When the API server received it (RFC 3339).
    pub at: String,
}

/// Counts `writes` by verb and resource.
pub fn count(writes: &[Write]) -> Writes {
    let mut counted = Writes::new();
    for w in writes {
        *counted
            .entry((w.verb.clone(), w.resource.clone()))
            .or_default() += 1;
    }
    counted
}

impl AuditLog {
    pub fn of_cluster(state_dir: &str) -> AuditLog {
        AuditLog {
            path: Path::new(state_dir).join("logs/audit.log"),
        }
    }

    /// Where the log ends now: a later [`AuditLog::writes_since`] counts what comes after.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// The writes of the ServiceAccount `account` of [`BENCH_NAMESPACE`] logged after `mark`, in order,
    /// but those of Leases (a replica's leader election, not any Canary's work).
    pub fn writes_since(&self, mark: u64, account: &str) -> Vec<Write> {
        let user = format!("system:serviceaccount:{BENCH_NAMESPACE}:{account}");
        let mut writes = Vec::new();
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return writes;
        };
        if file.seek(std::io::SeekFrom::Start(mark)).is_err() {
            return writes;
        }
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["user"]["username"] != user.as_str() {
                continue;
            }
            let object = &entry["objectRef"];
            let mut resource = object["resource"].as_str().unwrap_or("?").to_string();
            if let Some(sub) = object["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            // The Lease of the leader election: the replica's, not any canary's.
            if object["resource"] == "leases" {
                continue;
            }
            writes.push(Write {
                verb: entry["verb"].as_str().unwrap_or("?").to_string(),
                resource,
                name: object["name"].as_str().unwrap_or_default().to_string(),
                at: entry["requestReceivedTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        writes
    }
}

/// Deletes the namespaces and waits until they are gone, so the next measurement has the API server to
/// itself.
pub async fn delete_namespaces(client: &Client, names: &[&str], timeout: Duration) {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        let _ = api.delete(name, &Default::default()).await;
    }
    let start = Instant::now();
    for name in names {
        while api.get_opt(name).await.ok().flatten().is_some() {
            assert!(
                start.elapsed() < timeout,
                "namespace {name} still there after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
