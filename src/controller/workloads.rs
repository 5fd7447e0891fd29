//! The watch caches of the workload kinds a Canary can target, read as [`Workload`]s.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use serde::{Serialize, de::DeserializeOwned};

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
        self.read(kind, namespace, name, None)
    }

    /// The cached workload if its JSON holds `text` as a string (None when it does not or is not cached):
    /// the cheap test before decoding it to see what it references.
    pub fn get_if_mentions(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
        text: &str,
    ) -> Option<Workload> {
        self.read(kind, namespace, name, Some(text))
    }

    fn read(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
        mentioning: Option<&str>,
    ) -> Option<Workload> {
        fn one<K>(
            cache: &Cache<K>,
            namespace: &str,
            name: &str,
            mentioning: Option<&str>,
        ) -> Option<Arc<K>>
        where
            K: Resource<DynamicType = ()> + DeserializeOwned + Serialize + Clone + 'static,
        {
            let packed = cache.packed(&ObjectRef::new(name).within(namespace))?;
            match mentioning {
                Some(text) => packed.unpack_if_mentions(text),
                None => packed.unpack(),
            }
            .map(Arc::new)
        }
        match kind {
            WorkloadKind::Deployment => {
                one(&self.deployments, namespace, name, mentioning).map(Workload::Deployment)
            }
            WorkloadKind::DaemonSet => {
                one(&self.daemon_sets, namespace, name, mentioning).map(Workload::DaemonSet)
            }
            WorkloadKind::StatefulSet => {
                one(&self.stateful_sets, namespace, name, mentioning).map(Workload::StatefulSet)
            }
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
