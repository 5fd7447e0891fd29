//! When Flux has applied a roll-forward commit: ask it to fetch now (the GitRepository's reconcile
//! annotation), then watch the Kustomization until its lastAppliedRevision names the commit, or a later one
//! whose history holds it.

use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::gitsource::{KustomizationSpec, git_repositories, kustomizations, spec_of};

const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// Asks Flux to fetch the GitRepository now.
pub async fn request_reconcile(client: &Client, ns: &str, name: &str) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &git_repositories());
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {REQUESTED_AT: now}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// What the Kustomization says of `commit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Convergence {
    Applied(String),
    Suspended,
    Waiting(String),
}

/// Watches the Kustomization until it has applied `commit` (its lastAppliedRevision names it); says
/// `on_change` each time what it says changes.
pub async fn wait_applied(
    client: &Client,
    ns: &str,
    name: &str,
    commit: &str,
    mut on_change: impl FnMut(&Convergence),
    includes: impl AsyncFn(&str) -> bool,
) -> String {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &kustomizations());
    let mut stream = std::pin::pin!(watch_one(api, name));
    let mut last = None;
    let mut last_checked: Option<String> = None;
    while let Some(k) = stream.next().await {
        let applied = k
            .data
            .pointer("/status/lastAppliedRevision")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        // A later commit applied first (image automation, a developer) includes ours: Flux fetches the tip
        // only, and may never name our commit itself.
        let newer = !applied.contains(commit)
            && last_checked.as_deref() != Some(applied.as_str())
            && !applied.is_empty()
            && {
                last_checked = Some(applied.clone());
                let sha = applied.rsplit(':').next().unwrap_or_default();
                includes(sha).await
            };
        let state = if applied.contains(commit) || newer {
            Convergence::Applied(applied.clone())
        } else if spec_of::<KustomizationSpec>(&k).suspend {
            Convergence::Suspended
        } else {
            Convergence::Waiting(applied)
        };
        if last.as_ref() != Some(&state) {
            on_change(&state);
        }
        if let Convergence::Applied(revision) = &state {
            return format!("{revision} applied by Kustomization {ns}/{}", k.name_any());
        }
        last = Some(state);
    }
    String::new()
}

/// One object's versions as a watch brings them (errors retried by the watcher's backoff, a second apart).
pub fn watch_one(
    api: Api<DynamicObject>,
    name: &str,
) -> impl futures::Stream<Item = DynamicObject> + use<> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api, config)
        .default_backoff()
        .applied_objects()
        .filter_map(|item| async move {
            match item {
                Ok(o) => Some(o),
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    None
                }
            }
        })
}
