//! Which Canaries an object concerns, so a change to it reconciles them: those owning it, those targeting
//! it, and those whose target uses it (a ConfigMap or Secret).

use kube::api::{Api, ObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};

use k8s_openapi::api::apps::v1::Deployment;

use crate::api::Canary;
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

/// Canaries an object concerns: those owning it, and those targeting it (by name in its namespace).
pub fn canaries_of(meta: &ObjectMeta, canaries: &Store<Canary>) -> Vec<ObjectRef<Canary>> {
    let ns = meta.namespace.clone().unwrap_or_default();
    let mut refs: Vec<ObjectRef<Canary>> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "Canary" && o.api_version.starts_with("serin.dev/"))
        .map(|o| ObjectRef::new(&o.name).within(&ns))
        .collect();
    let name = meta.name.clone().unwrap_or_default();
    refs.extend(
        canaries
            .state()
            .iter()
            .filter(|c| c.namespace().as_deref() == Some(&ns))
            .filter(|c| c.spec.target_ref.name == name)
            .map(|c| ObjectRef::from_obj(&**c)),
    );
    refs
}

/// Canaries a ConfigMap or Secret concerns: those owning it (its `-primary` copy), and those whose target's
/// pods use it, whether it exists yet or not (so one that appears after the Canary is seen at once).
pub fn canaries_using(
    meta: &ObjectMeta,
    kind: ConfigKind,
    canaries: &Store<Canary>,
    deployments: &Store<Deployment>,
) -> Vec<ObjectRef<Canary>> {
    let ns = meta.namespace.clone().unwrap_or_default();
    let config = ConfigRef {
        kind,
        name: meta.name.clone().unwrap_or_default(),
    };
    let mut refs = canaries_of(
        &ObjectMeta {
            // Only ownership: a config is never a target.
            name: None,
            ..meta.clone()
        },
        canaries,
    );
    refs.extend(
        canaries
            .state()
            .iter()
            .filter(|c| c.namespace().as_deref() == Some(&ns))
            .filter(|c| {
                deployments
                    .get(&ObjectRef::new(&c.spec.target_ref.name).within(&ns))
                    .and_then(|d| d.spec.as_ref()?.template.spec.as_ref().map(referenced))
                    .is_some_and(|used| used.contains(&config))
            })
            .map(|c| ObjectRef::from_obj(&**c)),
    );
    refs
}
