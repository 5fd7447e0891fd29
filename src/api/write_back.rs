//! Serin's roll forward in git (`spec.writeBack`, `status.writeBack`): when a canary fails, a commit puts the
//! images the primary runs back into the repository the target is applied from, so git says what the
//! cluster serves. Absent means off; Flagger's manifests are unchanged.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Where and how a failed canary's roll-forward commit is written. Every field is optional: `writeBack: {}`
/// finds the repository from the target's Flux labels (Kustomization, then its GitRepository).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.url) || !has(self.sourceRef)").message("writeBack: set url or sourceRef, not both"))]
pub struct WriteBack {
    /// The Flux GitRepository to write to (its url, ref.branch and secretRef); default: the one the target's
    /// Kustomization applies from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,
    /// The repository's URL (http, https or ssh), for a target not applied by Flux.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://') || self.startsWith('ssh://')").message("writeBack.url must be an http, https or ssh:// URL"))]
    pub url: Option<String>,
    /// A Secret in the Canary's namespace with the credentials, in Flux's GitRepository layout: `username`
    /// and `password`, or `bearerToken`, or `identity` and `known_hosts` (ssh); `ca.crt` for a private CA.
    /// Default: the GitRepository's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalRef>,
    /// The branch to read and to write to; default: the GitRepository's ref.branch, else main.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The directory of the repository the target's manifests are under; default: the Kustomization's
    /// spec.path (narrowed to one file by Flux's origin annotation, when the Kustomization adds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Push somewhere else than `branch`: a branch of Serin's own, for review (rebuilt from `branch` and
    /// force-pushed), or a refspec such as refs/for/main.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushTarget>,
    /// The commit's author and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitSettings>,
    /// Ask Flux to fetch at once after the push (annotate the GitRepository); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_reconcile: Option<bool>,
    /// Work out the change and show it in status.writeBack.diff; never commit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// A Flux source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// GitRepository (the only kind written to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 'GitRepository'").message("writeBack.sourceRef.kind must be GitRepository"))]
    pub kind: Option<String>,
    #[x_kube(validation = Rule::new("self != ''").message("writeBack.sourceRef.name must name a GitRepository"))]
    pub name: String,
    /// Default: the Canary's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// An object in the Canary's namespace, by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct LocalRef {
    pub name: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.branch) && has(self.refspec))").message("writeBack.push: set branch or refspec, not both"))]
pub struct PushTarget {
    /// A branch Serin owns: rebuilt from the base branch's tip plus the roll-forward commit, force-pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Where the commit is pushed, e.g. refs/for/main (Gerrit, Gitea's AGit); never forced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refspec: Option<String>,
    /// Push options (git push -o key=value), e.g. merge_request.create for GitLab.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommitSettings {
    /// Default: the controller's --write-back-author-name and --write-back-author-email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<CommitAuthor>,
    /// The message, with {{ placeholders }} as MetricTemplates have: canary, namespace, failedImages,
    /// restoredImages, reason, failedRevision, restoredRevision. Serin-* trailers are always added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_template: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CommitAuthor {
    #[x_kube(validation = Rule::new("self != ''").message("writeBack.commit.author.name must not be empty"))]
    pub name: String,
    #[x_kube(validation = Rule::new("self.contains('@')").message("writeBack.commit.author.email must be an email address"))]
    pub email: String,
}

/// What became of the roll forward of the last failed revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WriteBackStatus {
    pub phase: WriteBackPhase,
    /// The failed revision this is for: one roll forward per failed revision.
    pub for_revision: String,
    /// When the rollback opened it: a revision retried and failed again is a new roll forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened: Option<MicroTime>,
    /// Why the canary failed, for the commit message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
    /// What goes back: each container's image, failed and restored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub changes: Vec<ImageChange>,
    /// Differences between the failed and the promoted pod template that a roll forward leaves in git.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub not_restored: Vec<String>,
    /// The repository (without credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The ref pushed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The roll-forward commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The files the commit changes (or would change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub files: Vec<String>,
    /// Dry run: the unified diff that would be committed (truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Pushes tried for this revision.
    #[serde(default)]
    pub attempts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<MicroTime>,
    /// Why it is in this phase, in one word (NotFound, Ambiguous, AuthFailed, Refused, PushRejected,
    /// NoSource, GitError, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One container's image: the failed one in git, and the one the primary runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageChange {
    pub container: String,
    pub from: String,
    pub to: String,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash,
)]
pub enum WriteBackPhase {
    /// To be written (or being written, or retrying).
    #[default]
    Pending,
    /// The commit is pushed; the GitOps tool has not applied it yet.
    Pushed,
    /// The GitOps tool has applied the commit.
    Applied,
    /// Git already names the restored images: nothing to commit.
    AlreadyUpToDate,
    /// Git names neither the failed nor the restored images: someone moved on; nothing committed.
    Superseded,
    /// Dry run: the diff is in status, nothing committed.
    DryRun,
    /// Nothing committed, for the reason given.
    Failed,
}

impl WriteBackStatus {
    /// The writer still has work for it: to write, to see applied, or to try again after a failure that
    /// may pass (credentials, the network, a refused push). A file not found, or an ambiguous one, waits
    /// for a change.
    pub fn is_open(&self) -> bool {
        match self.phase {
            WriteBackPhase::Pending | WriteBackPhase::Pushed => true,
            WriteBackPhase::Failed => !matches!(
                self.reason.as_deref(),
                Some(
                    "NotFound"
                        | "Ambiguous"
                        | "NoSource"
                        | "NothingToRestore"
                        | "Disabled"
                        | "InvalidSpec"
                )
            ),
            _ => false,
        }
    }
}

impl WriteBackPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteBackPhase::Pending => "Pending",
            WriteBackPhase::Pushed => "Pushed",
            WriteBackPhase::Applied => "Applied",
            WriteBackPhase::AlreadyUpToDate => "AlreadyUpToDate",
            WriteBackPhase::Superseded => "Superseded",
            WriteBackPhase::DryRun => "DryRun",
            WriteBackPhase::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for WriteBackPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A commit id as people read it.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}
