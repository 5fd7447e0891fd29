//! Which Canaries an object concerns, so a change to it reconciles them: those owning it, those targeting
//! it, and those whose target uses it (a ConfigMap or Secret).

use kube::api::{Api, ObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};

use super::Workloads;
use crate::api::Canary;
use crate::workload::WorkloadKind;
use crate::workload::configs::{ConfigKind, ConfigRef, referenced};

/// An Api over the watched namespace, or all of them.
pub fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The Canaries owning an object.
fn owners(meta: &ObjectMeta) -> impl Iterator<Item = ObjectRef<Canary>> + '_ {
    let ns = meta.namespace.clone().unwrap_or_default();
    meta.owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "Canary" && o.api_version.starts_with("serin.dev/"))
        .map(move |o| ObjectRef::new(&o.name).within(&ns))
}

/// The Canaries in `ns` that `concerns` picks.
fn canaries_in<'a>(
    canaries: &'a Store<Canary>,
    ns: &'a str,
    concerns: impl Fn(&Canary) -> bool + 'a,
) -> impl Iterator<Item = ObjectRef<Canary>> + 'a {
    canaries
        .state()
        .into_iter()
        .filter(move |c| c.namespace().as_deref() == Some(ns) && concerns(c))
        .map(|c| ObjectRef::from_obj(&*c))
}

/// Canaries an object concerns: those owning it, and those targeting it or naming it as the target's
/// autoscaler (by name in its namespace).
pub fn canaries_of(meta: &ObjectMeta, canaries: &Store<Canary>) -> Vec<ObjectRef<Canary>> {
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    owners(meta)
        .chain(canaries_in(canaries, &ns, |c| {
            c.spec.target_ref.name == name
                || c.spec
                    .autoscaler_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name)
        }))
        .collect()
}

/// Canaries a ConfigMap or Secret concerns: those owning it (its `-primary` copy), and those whose target's
/// pods use it, whether it exists yet or not (so one that appears after the Canary is seen at once).
pub fn canaries_using(
    meta: &ObjectMeta,
    kind: ConfigKind,
    canaries: &Store<Canary>,
    workloads: &Workloads,
) -> Vec<ObjectRef<Canary>> {
    let ns = meta.namespace.clone().unwrap_or_default();
    let config = ConfigRef {
        kind,
        name: meta.name.clone().unwrap_or_default(),
    };
    let uses = |c: &Canary| {
        WorkloadKind::of(c.spec.target_ref.kind)
            .and_then(|kind| workloads.get(kind, &ns, &c.spec.target_ref.name))
            .and_then(|w| w.template()?.spec.as_ref().map(referenced))
            .is_some_and(|used| used.contains(&config))
    };
    owners(meta)
        .chain(canaries_in(canaries, &ns, uses))
        .collect()
}
