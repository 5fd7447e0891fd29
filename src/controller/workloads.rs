//! The watch caches of the workload kinds a Canary can target, read as [`Workload`]s.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::runtime::reflector::{ObjectRef, Store};

use super::synced;
use crate::workload::{Workload, WorkloadKind};

#[derive(Clone)]
pub struct Workloads {
    pub deployments: Store<Deployment>,
    pub daemon_sets: Store<DaemonSet>,
    pub stateful_sets: Store<StatefulSet>,
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

    /// The caches without a full list yet, by the names of their kinds.
    pub fn unsynced(&self) -> Vec<&'static str> {
        [
            ("Deployments", synced(&self.deployments)),
            ("DaemonSets", synced(&self.daemon_sets)),
            ("StatefulSets", synced(&self.stateful_sets)),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect()
    }
}
