//! Workloads: the target a Canary runs new revisions of, and the primary Serin keeps beside it. A target is
//! a Deployment or a DaemonSet (Flagger's kinds), or a StatefulSet (ours); [`Workload`] is what Serin
//! reads of any, so the rest of the controller does not care which.

pub mod configs;
pub mod metadata;
pub mod primary;
pub mod readiness;
pub mod revision;
pub mod scale;
pub mod scaler;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{ApiResource, DynamicObject};

use crate::api::canary::TargetKind;

/// The annotation on objects Serin made that records the revision they were made from.
pub const REVISION_ANNOTATION: &str = "serin.dev/revision";
/// Serin's names for what it makes from a target: `<name>-primary`.
pub const PRIMARY_SUFFIX: &str = "-primary";

/// The kinds of workload a Canary can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    DaemonSet,
    StatefulSet,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 3] = [
        WorkloadKind::Deployment,
        WorkloadKind::DaemonSet,
        WorkloadKind::StatefulSet,
    ];

    /// The kind a targetRef names (Deployment when it names none); None for a kind that is not a workload
    /// Serin copies.
    pub fn of(kind: Option<TargetKind>) -> Option<Self> {
        match kind {
            None | Some(TargetKind::Deployment) => Some(WorkloadKind::Deployment),
            Some(TargetKind::DaemonSet) => Some(WorkloadKind::DaemonSet),
            Some(TargetKind::StatefulSet) => Some(WorkloadKind::StatefulSet),
            Some(TargetKind::Service) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }

    pub fn resource(self) -> ApiResource {
        match self {
            WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
            WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
            WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A target or primary, as the watch cache (or the API server's answer) holds it.
#[derive(Debug, Clone)]
pub enum Workload {
    Deployment(Arc<Deployment>),
    DaemonSet(Arc<DaemonSet>),
    StatefulSet(Arc<StatefulSet>),
}

impl Workload {
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Workload::Deployment(_) => WorkloadKind::Deployment,
            Workload::DaemonSet(_) => WorkloadKind::DaemonSet,
            Workload::StatefulSet(_) => WorkloadKind::StatefulSet,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Workload::Deployment(d) => &d.metadata,
            Workload::DaemonSet(d) => &d.metadata,
            Workload::StatefulSet(d) => &d.metadata,
        }
    }

    pub fn name(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }

    pub fn namespace(&self) -> String {
        self.meta().namespace.clone().unwrap_or_default()
    }

    pub fn selector(&self) -> Option<&LabelSelector> {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.selector),
            Workload::DaemonSet(d) => d.spec.as_ref().map(|s| &s.selector),
            Workload::StatefulSet(d) => d.spec.as_ref().map(|s| &s.selector),
        }
    }

    pub fn template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
            Workload::DaemonSet(d) => d.spec.as_ref().map(|s| &s.template),
            Workload::StatefulSet(d) => d.spec.as_ref().map(|s| &s.template),
        }
    }

    /// The pod template as the user wrote it: what the revision is computed from. Serin's own mark on a
    /// DaemonSet scaled to zero (a node selector) is not part of it.
    pub fn revision_template(&self) -> PodTemplateSpec {
        let mut template = self.template().cloned().unwrap_or_default();
        if self.kind() == WorkloadKind::DaemonSet {
            scale::unmark(&mut template);
        }
        template
    }

    /// spec.replicas, for the kinds that have it.
    pub fn replicas(&self) -> Option<i32> {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas),
            Workload::StatefulSet(d) => d.spec.as_ref().and_then(|s| s.replicas),
            Workload::DaemonSet(_) => None,
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&String> {
        self.meta().annotations.as_ref().and_then(|a| a.get(key))
    }

    /// The workload as JSON, for comparing with what Serin would apply.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Workload::Deployment(d) => serde_json::to_value(&**d),
            Workload::DaemonSet(d) => serde_json::to_value(&**d),
            Workload::StatefulSet(d) => serde_json::to_value(&**d),
        }
        .unwrap_or(serde_json::Value::Null)
    }

    /// A workload of `kind` from an untyped object (the API server's answer to a patch).
    pub fn from_dynamic(kind: WorkloadKind, object: DynamicObject) -> Result<Self, String> {
        let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
        Ok(match kind {
            WorkloadKind::Deployment => Workload::Deployment(Arc::new(
                serde_json::from_value(value).map_err(|e| e.to_string())?,
            )),
            WorkloadKind::DaemonSet => Workload::DaemonSet(Arc::new(
                serde_json::from_value(value).map_err(|e| e.to_string())?,
            )),
            WorkloadKind::StatefulSet => Workload::StatefulSet(Arc::new(
                serde_json::from_value(value).map_err(|e| e.to_string())?,
            )),
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkloadError {
    #[error(
        "{kind} {namespace}/{name}: spec.selector.matchExpressions is not supported; select pods with matchLabels"
    )]
    SelectorExpressions {
        kind: WorkloadKind,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name}: spec.selector.matchLabels is empty")]
    NoSelector {
        kind: WorkloadKind,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name} has no pod template")]
    NoTemplate {
        kind: WorkloadKind,
        namespace: String,
        name: String,
    },
    #[error(
        "{kind} {namespace}/{name}: spec.updateStrategy.type is {strategy}; Serin needs RollingUpdate to roll the primary to a promoted revision"
    )]
    UpdateStrategy {
        kind: WorkloadKind,
        namespace: String,
        name: String,
        strategy: String,
    },
    #[error(
        "{kind} {namespace}/{name}: spec.updateStrategy.rollingUpdate.partition is {partition}; the primary must roll every pod to a promoted revision, so Serin needs no partition"
    )]
    Partition {
        kind: WorkloadKind,
        namespace: String,
        name: String,
        partition: i32,
    },
}
