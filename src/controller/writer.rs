//! The writers of roll forwards in git, off the reconcile path: one task per Canary with an open
//! status.writeBack, started and stopped by the decisions (so only the leader writes: a replica that loses
//! the lease drops its controller, and with it every writer). A task finds the repository, writes (see
//! crate::writeback), asks Flux to fetch, and watches the Kustomization until it has applied the commit; each
//! step is a report the next reconcile folds into the status (a reconcile is triggered for it).

use super::mapping::canary_ref;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use super::argocd;
use super::convergence::{self, Convergence};
use super::gitsource::{self, SourceError};
use crate::api::Canary;
use crate::api::write_back::{WriteBack, WriteBackPhase, WriteBackStatus};
use crate::telemetry::Metrics;
use crate::workload::Workload;
use crate::writeback::{self, Destination, Job, Push};

/// The controller's write-back settings (flags).
#[derive(Debug, Clone)]
pub struct WriteBackDefaults {
    /// Canaries without spec.writeBack write back too (--write-back-default=on).
    pub default_on: bool,
    pub author_name: String,
    pub author_email: String,
    pub message_template: String,
    /// Credentials may be read from the GitRepository's namespace (Flux's default); off with
    /// --no-cross-namespace-refs.
    pub cross_namespace: bool,
}

impl Default for WriteBackDefaults {
    fn default() -> Self {
        WriteBackDefaults {
            default_on: false,
            author_name: "serin".into(),
            author_email: "serin@noreply.invalid".into(),
            message_template: writeback::message::DEFAULT_TEMPLATE.into(),
            cross_namespace: true,
        }
    }
}

/// A failure that may pass is tried again after this, doubled each time, up to MAX_RETRY.
const FIRST_RETRY: Duration = Duration::from_secs(10);
const MAX_RETRY: Duration = Duration::from_secs(600);

/// A writer at work, and what it works from: a new roll forward of the revision (failed again after a
/// retry) or a changed spec.writeBack starts a new one.
struct Running {
    for_revision: String,
    opened: Option<MicroTime>,
    spec: Option<WriteBack>,
    task: tokio::task::JoinHandle<()>,
}

pub struct Writers {
    defaults: WriteBackDefaults,
    running: Mutex<HashMap<ObjectRef<Canary>, Running>>,
    reports: Arc<Mutex<HashMap<ObjectRef<Canary>, WriteBackStatus>>>,
    wake: UnboundedSender<ObjectRef<Canary>>,
}

impl Drop for Writers {
    fn drop(&mut self) {
        for (_, r) in self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            r.task.abort();
        }
    }
}

/// What a writer task needs of the controller.
pub struct Tools {
    pub client: Client,
    pub secrets: Store<Secret>,
    pub metrics: Arc<Metrics>,
}

impl Writers {
    pub fn new(defaults: WriteBackDefaults, wake: UnboundedSender<ObjectRef<Canary>>) -> Self {
        Writers {
            defaults,
            running: Mutex::new(HashMap::new()),
            reports: Arc::new(Mutex::new(HashMap::new())),
            wake,
        }
    }

    pub fn default_on(&self) -> bool {
        self.defaults.default_on
    }

    /// The latest report for `canary`.
    pub fn report(&self, canary: &ObjectRef<Canary>) -> Option<WriteBackStatus> {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(canary)
            .cloned()
    }

    /// Keeps a writer at work on `for_revision` (starting it unless one is), or stops any.
    pub fn keep(
        &self,
        tools: impl FnOnce() -> Tools,
        canary: &Canary,
        target: &Workload,
        primary: Option<&Workload>,
        status: &crate::api::CanaryStatus,
        for_revision: Option<&str>,
    ) {
        let key = canary_ref(canary);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(revision) = for_revision else {
            if let Some(r) = running.remove(&key) {
                r.task.abort();
            }
            return;
        };
        let Some(wb) = status.write_back.clone() else {
            return;
        };
        if wb.for_revision != revision {
            return;
        }
        if let Some(r) = running.get(&key)
            && r.for_revision == revision
            && r.opened == wb.opened
            && r.spec == canary.spec.write_back
        {
            return;
        }
        let restored_revision = status.last_promoted_spec.clone().unwrap_or_default();
        let opened = wb.opened.clone();
        let mut status = wb;
        status.not_restored = not_restored(target, primary);
        let task = Task {
            tools: tools(),
            defaults: self.defaults.clone(),
            canary: canary.clone(),
            labels: target.meta().labels.clone().unwrap_or_default(),
            annotations: target.meta().annotations.clone().unwrap_or_default(),
            kind: target.kind().as_str().to_string(),
            status,
            restored_revision,
            reports: self.reports.clone(),
            wake: self.wake.clone(),
            key: key.clone(),
        };
        let span = info_span!("write_back", namespace = %canary.namespace().unwrap_or_default(), name = %canary.name_any(), revision = %revision);
        let handle = tokio::spawn(task.run().instrument(span));
        if let Some(old) = running.insert(
            key,
            Running {
                for_revision: revision.to_string(),
                opened,
                spec: canary.spec.write_back.clone(),
                task: handle,
            },
        ) {
            old.task.abort();
        }
    }

    /// Forgets every Canary `exists` says is gone (a re-list after the watch was down).
    pub fn retain(&self, exists: impl Fn(&ObjectRef<Canary>) -> bool) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|key, r| {
            let keep = exists(key);
            if !keep {
                r.task.abort();
            }
            keep
        });
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, _| exists(key));
    }

    /// Forgets a deleted Canary.
    pub fn forget(&self, canary: &ObjectRef<Canary>) {
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(canary)
        {
            r.task.abort();
        }
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(canary);
    }
}

/// The differences between the failed and the promoted pod template that restoring images leaves: the
/// pod spec's fields, and each container's, other than `image`.
fn not_restored(target: &Workload, primary: Option<&Workload>) -> Vec<String> {
    let Some(primary) = primary else {
        return Vec::new();
    };
    let spec = |w: &Workload| {
        serde_json::to_value(w.revision_template().spec.unwrap_or_default()).unwrap_or_default()
    };
    let (failed, promoted) = (spec(target), spec(primary));
    let mut out = Vec::new();
    let empty = serde_json::Map::new();
    let (f, p) = (
        failed.as_object().unwrap_or(&empty),
        promoted.as_object().unwrap_or(&empty),
    );
    for key in f
        .keys()
        .chain(p.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if key == "containers" || key == "initContainers" {
            let by_name = |v: Option<&serde_json::Value>| -> BTreeMap<String, serde_json::Value> {
                v.and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|c| Some((c.get("name")?.as_str()?.to_string(), c.clone())))
                    .collect()
            };
            let (fc, pc) = (by_name(f.get(key)), by_name(p.get(key)));
            for (name, c) in &fc {
                let Some(other) = pc.get(name) else {
                    out.push(format!("{key}: {name} is new"));
                    continue;
                };
                let fields: Vec<&String> = c
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.keys())
                    .chain(other.as_object().into_iter().flat_map(|o| o.keys()))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .filter(|k| *k != "image" && c.get(*k) != other.get(*k))
                    .collect();
                if !fields.is_empty() {
                    out.push(format!(
                        "container {name}: {}",
                        fields
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            for name in pc.keys().filter(|n| !fc.contains_key(*n)) {
                out.push(format!("{key}: {name} was removed"));
            }
        } else if f.get(key) != p.get(key) {
            out.push(format!("pod spec: {key}"));
        }
    }
    out.truncate(32);
    out
}

fn options_of(spec: &WriteBack) -> writeback::PushOptions {
    spec.push
        .as_ref()
        .map(|p| p.options.clone())
        .unwrap_or_default()
}

struct Task {
    tools: Tools,
    defaults: WriteBackDefaults,
    canary: Canary,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    kind: String,
    /// status.writeBack as it stands (the task's own view, reported at each step).
    status: WriteBackStatus,
    restored_revision: String,
    reports: Arc<Mutex<HashMap<ObjectRef<Canary>, WriteBackStatus>>>,
    wake: UnboundedSender<ObjectRef<Canary>>,
    key: ObjectRef<Canary>,
}

impl Task {
    fn report(&self) {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.key.clone(), self.status.clone());
        let _ = self.wake.unbounded_send(self.key.clone());
    }

    async fn run(mut self) {
        let spec = self.canary.spec.write_back.clone().unwrap_or_default();
        let ns = self.canary.namespace().unwrap_or_default();
        let mut wait = FIRST_RETRY;
        // Each round finds the repository again: a fixed Secret or GitRepository is used at once.
        let source = loop {
            let source = match gitsource::resolve(
                &self.tools.client,
                &self.tools.secrets,
                &ns,
                &spec,
                &gitsource::Target {
                    kind: &self.kind,
                    namespace: &ns,
                    name: &self.canary.spec.target_ref.name,
                    labels: &self.labels,
                    annotations: &self.annotations,
                },
                self.defaults.cross_namespace,
            )
            .await
            {
                Ok(s) => s,
                Err(SourceError::NoSource(m)) => {
                    self.finish(WriteBackPhase::Failed, Some("NoSource"), m);
                    return;
                }
                Err(SourceError::Api(m)) => {
                    self.status.phase = WriteBackPhase::Failed;
                    self.status.reason = Some("SourceUnreadable".into());
                    self.retry_later(&m, &mut wait).await;
                    continue;
                }
            };
            self.status.repository = Some(writeback::git::shown_url(&source.remote.url));
            if self.status.phase == WriteBackPhase::Pushed {
                break source;
            }
            let started = std::time::Instant::now();
            let written = writeback::write(
                &self.job(&ns),
                &self.destination(&spec, &source),
                &options_of(&spec),
            )
            .await;
            self.tools.metrics.write_back(
                written.phase,
                written.reason.as_deref(),
                started.elapsed(),
            );
            self.status.attempts = self.status.attempts.saturating_add(written.attempts as i32);
            self.status.last_attempt_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
            self.status.commit = written.commit.clone();
            self.status.branch = written.branch.clone();
            self.status.files = written.files.clone();
            self.status.diff = written.diff.clone();
            self.status.phase = written.phase;
            self.status.reason = written.reason.clone();
            self.status.message = written.message.clone();
            info!(phase = %written.phase, reason = ?written.reason, message = %written.message, "write-back");
            if written.phase == WriteBackPhase::Failed && self.status.is_open() {
                self.retry_later(&written.message, &mut wait).await;
                continue;
            }
            self.report();
            if self.status.phase != WriteBackPhase::Pushed {
                return;
            }
            break source;
        };
        // Applied: only a push to the branch the Kustomization applies from can be.
        let Some(commit) = self.status.commit.clone() else {
            return;
        };
        let to_applied_branch = self.status.branch.as_deref() == Some(source.branch.as_str());
        if !to_applied_branch {
            return;
        }
        if spec.request_reconcile.unwrap_or(true)
            && let Some((ns, name)) = &source.git_repository
            && let Err(e) = convergence::request_reconcile(&self.tools.client, ns, name).await
        {
            warn!(error = %e, "asking Flux to fetch GitRepository {ns}/{name}: it fetches at its interval");
        }
        if let Some((a_ns, a_name)) = source.application.clone() {
            if spec.request_reconcile.unwrap_or(true)
                && let Err(e) = argocd::request_refresh(&self.tools.client, &a_ns, &a_name).await
            {
                warn!(error = %e, "asking Argo CD to refresh Application {a_ns}/{a_name}: it refreshes at its interval");
            }
            let synced = argocd::wait_synced(&self.tools.client, &a_ns, &a_name, &commit).await;
            self.finish(WriteBackPhase::Applied, None, synced);
            return;
        }
        let Some((k_ns, k_name)) = source.kustomization.clone() else {
            return;
        };
        let pushed_message = self.status.message.clone();
        let client = self.tools.client.clone();
        let (remote, branch) = (source.remote.clone(), source.branch.clone());
        let ours = commit.clone();
        let includes = async move |applied: &str| {
            let Ok(ws) = writeback::git::Workspace::open(remote.clone()).await else {
                return false;
            };
            ws.is_ancestor(&branch, &ours, applied)
                .await
                .unwrap_or(false)
        };
        let applied = convergence::wait_applied(
            &client,
            &k_ns,
            &k_name,
            &commit,
            |state| {
                if let Convergence::Suspended = state {
                    self.status.message = format!(
                        "{pushed_message}; not applied yet: Kustomization {k_ns}/{k_name} is suspended"
                    );
                    self.report();
                }
            },
            includes,
        )
        .await;
        self.finish(WriteBackPhase::Applied, None, applied);
    }

    fn job(&self, ns: &str) -> Job {
        Job {
            canary_namespace: ns.to_string(),
            canary_name: self.canary.name_any(),
            for_revision: self.status.for_revision.clone(),
            restored_revision: self.restored_revision.clone(),
            cause: self.status.cause.clone(),
            changes: self.status.changes.clone(),
            kind: self.kind.clone(),
            name: self.canary.spec.target_ref.name.clone(),
        }
    }

    fn destination(&self, spec: &WriteBack, source: &gitsource::Source) -> Destination {
        let push = match spec.push.as_ref() {
            Some(p) if p.branch.is_some() => Push::Own(p.branch.clone().unwrap_or_default()),
            Some(p) if p.refspec.is_some() => Push::Refspec(p.refspec.clone().unwrap_or_default()),
            _ => Push::Branch,
        };
        let commit = spec.commit.clone().unwrap_or_default();
        let author = commit.author;
        Destination {
            remote: source.remote.clone(),
            branch: source.branch.clone(),
            path: source.path.clone(),
            origin: source.origin.clone(),
            push,
            author_name: author
                .as_ref()
                .map_or(self.defaults.author_name.clone(), |a| a.name.clone()),
            author_email: author
                .as_ref()
                .map_or(self.defaults.author_email.clone(), |a| a.email.clone()),
            message_template: commit
                .message_template
                .unwrap_or_else(|| self.defaults.message_template.clone()),
            dry_run: spec.dry_run,
        }
    }

    /// A failure that may pass: said with when the next try comes, then waited out (doubling, capped).
    async fn retry_later(&mut self, why: &str, wait: &mut Duration) {
        self.status.message = format!("{why}; trying again in {}s", wait.as_secs());
        self.report();
        tokio::time::sleep(*wait).await;
        *wait = (*wait * 2).min(MAX_RETRY);
    }

    /// The task's last word (Applied, or a failure the writer cannot get past), counted and reported.
    fn finish(&mut self, phase: WriteBackPhase, reason: Option<&str>, message: String) {
        self.tools.metrics.write_back(phase, reason, Duration::ZERO);
        self.status.phase = phase;
        self.status.reason = reason.map(String::from);
        self.status.message = message;
        self.report();
    }
}
