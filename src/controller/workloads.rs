//! The watch caches of the workload kinds a Canary can target, read as [`Workload`]s.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::runtime::reflector::ObjectRef;

use super::packed::Cache;
use super::synced;
use crate::workload::{Workload, WorkloadKind};

#[derive(Clone)]
pub struct Workloads {
    pub deployments: Cache<Deployment>,
    pub daemon_sets: Cache<DaemonSet>,
    pub stateful_sets: Cache<StatefulSet>,
}

impl Workloads {
    pub fn get(&self, kind: WorkloadKind, namespace: &str, name: &str) -> Option<Workload> {
        match kind {
            WorkloadKind::Deployment => self
                .deployments
                .get(&ObjectRef::new(name).within(namespace))
                .map(Workload::Deployment),
            WorkloadKind::DaemonSet => self
                .daemon_sets
                .get(&ObjectRef::new(name).within(namespace))
                .map(Workload::DaemonSet),
            WorkloadKind::StatefulSet => self
                .stateful_sets
                .get(&ObjectRef::new(name).within(namespace))
                .map(Workload::StatefulSet),
        }
    }

    /// Whether the cached workload's JSON holds `text` as a string (false when it is not cached): the
    /// cheap test before decoding it to see what it references.
    pub fn mentions(&self, kind: WorkloadKind, namespace: &str, name: &str, text: &str) -> bool {
        match kind {
            WorkloadKind::Deployment => self
                .deployments
                .packed(&ObjectRef::new(name).within(namespace))
                .is_some_and(|p| p.mentions(text)),
            WorkloadKind::DaemonSet => self
                .daemon_sets
                .packed(&ObjectRef::new(name).within(namespace))
                .is_some_and(|p| p.mentions(text)),
            WorkloadKind::StatefulSet => self
                .stateful_sets
                .packed(&ObjectRef::new(name).within(namespace))
                .is_some_and(|p| p.mentions(text)),
        }
    }

    /// The caches without a full list yet, by the names of their kinds.
    pub fn unsynced(&self) -> Vec<&'static str> {
        [
            ("Deployments", synced(self.deployments.store())),
            ("DaemonSets", synced(self.daemon_sets.store())),
            ("StatefulSets", synced(self.stateful_sets.store())),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect()
    }
}
