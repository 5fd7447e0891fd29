//! Which Canaries an object concerns, so a change to it reconciles them: those owning it, those targeting
//! it, and those whose target uses it (a ConfigMap or Secret). Looked up in an index kept from the Canary
//! watch, never by scanning every Canary per event: with thousands of Canaries, each Deployment, Service or
//! Secret event would otherwise cost a pass over all of them.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use kube::api::{Api, ObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};

use super::Workloads;
use super::backlog::can_wait;
use crate::api::Canary;
use crate::routing::ServiceNames;
use crate::workload::configs::{ConfigKind, ConfigRef, referenced};
use crate::workload::{Workload, WorkloadKind};

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

/// The Canaries by namespace, and by the names they refer to in their namespace (target, autoscaler, apex
/// Service, Ingress, route).
#[derive(Default)]
pub struct CanaryIndex {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (namespace, name of a target or autoscaler) → the Canaries naming it.
    /// (Usually one Canary a name: a Vec is a fraction of a set's memory.)
    by_name: HashMap<(String, String), Vec<ObjectRef<Canary>>>,
    by_namespace: HashMap<String, HashSet<ObjectRef<Canary>>>,
    /// What each Canary was filed under, to unfile it.
    names: HashMap<ObjectRef<Canary>, Vec<String>>,
    /// Each Canary's target, when it is a workload: the pods whose configs concern it.
    targets: HashMap<ObjectRef<Canary>, (WorkloadKind, String)>,
    /// The Canaries in flight (not settled: backlog.rs).
    in_flight: HashSet<ObjectRef<Canary>>,
}

impl Inner {
    fn remove(&mut self, key: &ObjectRef<Canary>) {
        let ns = key.namespace.clone().unwrap_or_default();
        self.targets.remove(key);
        self.in_flight.remove(key);
        for name in self.names.remove(key).unwrap_or_default() {
            let k = (ns.clone(), name);
            if let Some(set) = self.by_name.get_mut(&k) {
                set.retain(|c| c != key);
                if set.is_empty() {
                    self.by_name.remove(&k);
                }
            }
        }
        if let Some(set) = self.by_namespace.get_mut(&ns) {
            set.remove(key);
            if set.is_empty() {
                self.by_namespace.remove(&ns);
            }
        }
    }

    fn add(&mut self, canary: &Canary) {
        let key = canary_ref(canary);
        self.remove(&key);
        if !can_wait(canary) {
            self.in_flight.insert(key.clone());
        }
        if let Some(kind) = WorkloadKind::of(canary.spec.target_ref.kind) {
            self.targets
                .insert(key.clone(), (kind, canary.spec.target_ref.name.clone()));
        }
        let ns = canary.namespace().unwrap_or_default();
        // Besides its target and autoscaler: the objects of the user's that it reads without owning them,
        // so that their changes reach a settled Canary by the watch, not the 30-minute look (an apex
        // Service taken over, an Ingress or route it copies or edits).
        let spec = &canary.spec;
        let mut names = vec![spec.target_ref.name.clone(), ServiceNames::of(canary).apex];
        names.extend(spec.autoscaler_ref.as_ref().map(|r| r.name.clone()));
        names.extend(spec.ingress_ref.as_ref().map(|r| r.name.clone()));
        names.extend(spec.route_ref.as_ref().map(|r| r.name.clone()));
        names.sort();
        names.dedup();
        for name in &names {
            self.by_name
                .entry((ns.clone(), name.clone()))
                .or_default()
                .push(key.clone());
        }
        self.by_namespace.entry(ns).or_default().insert(key.clone());
        self.names.insert(key, names);
    }
}

impl CanaryIndex {
    /// A Canary created or changed.
    pub fn apply(&self, canary: &Canary) {
        self.write().add(canary);
    }

    pub fn delete(&self, canary: &ObjectRef<Canary>) {
        self.write().remove(canary);
    }

    /// A new full list (the watch restarted) has been applied: the Canaries not in it are gone. (Not
    /// rebuilt from the list: that held two indexes, and every Canary decoded, at once.)
    pub fn retain(&self, listed: impl Fn(&ObjectRef<Canary>) -> bool) {
        let mut inner = self.write();
        let gone: Vec<ObjectRef<Canary>> =
            inner.names.keys().filter(|k| !listed(k)).cloned().collect();
        for key in gone {
            inner.remove(&key);
        }
    }

    /// The Canaries in `ns` whose target or autoscaler is named `name`.
    pub fn naming(&self, ns: &str, name: &str) -> Vec<ObjectRef<Canary>> {
        self.read()
            .by_name
            .get(&(ns.to_string(), name.to_string()))
            .map(|s| s.to_vec())
            .unwrap_or_default()
    }

    /// Whether `canary` is in flight, as last seen (not settled, or being deleted).
    pub fn in_flight(&self, canary: &ObjectRef<Canary>) -> bool {
        self.read().in_flight.contains(canary)
    }

    /// The Canaries in `ns` whose targets are workloads of a kind `of` takes, with their targets.
    fn targets_in(
        &self,
        ns: &str,
        of: impl Fn(WorkloadKind) -> bool,
    ) -> Vec<(ObjectRef<Canary>, WorkloadKind, String)> {
        let inner = self.read();
        inner
            .by_namespace
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(|key| {
                let (kind, name) = inner.targets.get(key)?;
                of(*kind).then(|| (key.clone(), *kind, name.clone()))
            })
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Canaries an object concerns: those owning it, and those targeting it or naming it as the target's
/// autoscaler (by name in its namespace).
pub fn canaries_of(meta: &ObjectMeta, index: &CanaryIndex) -> Vec<ObjectRef<Canary>> {
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    owners(meta).chain(index.naming(&ns, &name)).collect()
}

/// Canaries a ConfigMap or Secret concerns: those owning it (its `-primary` copy), and those whose target's
/// pods use it, whether it exists yet or not (so one that appears after the Canary is seen at once).
pub fn canaries_using(
    meta: &ObjectMeta,
    kind: ConfigKind,
    index: &CanaryIndex,
    workloads: &Workloads,
) -> Vec<ObjectRef<Canary>> {
    let ns = meta.namespace.clone().unwrap_or_default();
    let config = ConfigRef {
        kind,
        name: meta.name.clone().unwrap_or_default(),
    };
    let users = targets_naming(
        index,
        workloads,
        &ns,
        &config.name,
        |_| true,
        |w| {
            w.template()
                .and_then(|t| t.spec.as_ref())
                .is_some_and(|pod| referenced(pod).contains(&config))
        },
    );
    owners(meta).chain(users).collect()
}

/// The Canaries of `ns` whose workload target, of a kind `of` takes, names `name` and `uses` it as
/// decoded. Only the namespace's Canaries are looked at, and a target is decoded only when its JSON
/// holds `name` at all.
fn targets_naming(
    index: &CanaryIndex,
    workloads: &Workloads,
    ns: &str,
    name: &str,
    of: impl Fn(WorkloadKind) -> bool,
    uses: impl Fn(&Workload) -> bool,
) -> impl Iterator<Item = ObjectRef<Canary>> {
    index
        .targets_in(ns, of)
        .into_iter()
        .filter(move |(_, kind, target)| {
            workloads
                .get_if_mentions(*kind, ns, target, name)
                .is_some_and(|w| uses(&w))
        })
        .map(|(key, _, _)| key)
}

/// Canaries a Service concerns: as [`canaries_of`], and those whose StatefulSet target it governs (its
/// `serviceName`), since Serin keeps a `-primary` copy of that Service beside the primary's StatefulSet.
/// The StatefulSet names the Service, not the Canary, so the index can't file the Canary under it.
pub fn canaries_of_service(
    meta: &ObjectMeta,
    index: &CanaryIndex,
    workloads: &Workloads,
) -> Vec<ObjectRef<Canary>> {
    if owners(meta).next().is_some() {
        // One of Serin's own (a primary's or canary's Service, a governing copy): no user's StatefulSet
        // is governed by it.
        return canaries_of(meta, index);
    }
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    // Only the StatefulSet targets are looked at (most are Deployments).
    let stateful = |kind| kind == WorkloadKind::StatefulSet;
    let governing = targets_naming(index, workloads, &ns, &name, stateful, |w| match w {
        Workload::StatefulSet(s) => s
            .spec
            .as_ref()
            .is_some_and(|s| s.service_name.as_deref() == Some(name.as_str())),
        _ => false,
    });
    let mut canaries: Vec<_> = canaries_of(meta, index)
        .into_iter()
        .chain(governing)
        .collect();
    canaries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    canaries.dedup();
    canaries
}

/// A Canary's key, without the resourceVersion and uid an `ObjectRef::from_obj` carries (equality and
/// hashing ignore them; kept for every Canary, they were four strings instead of two).
pub fn canary_ref<K: Resource>(canary: &K) -> ObjectRef<Canary> {
    let meta = canary.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    match &meta.namespace {
        Some(ns) => ObjectRef::new(name).within(ns),
        None => ObjectRef::new(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(ns: &str, name: &str, target: &str, scaler: Option<&str>) -> Canary {
        let mut spec = serde_json::json!({"targetRef": {"name": target}, "service": {"port": 80}});
        if let Some(s) = scaler {
            spec["autoscalerRef"] = serde_json::json!({"name": s});
        }
        serde_json::from_value(
            serde_json::json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}),
        )
        .unwrap()
    }

    /// A workload cache holding `objects` (JSON).
    fn cache<K>(objects: &[serde_json::Value]) -> super::super::packed::Cache<K>
    where
        K: Resource<DynamicType = ()>
            + serde::de::DeserializeOwned
            + serde::Serialize
            + Clone
            + 'static,
    {
        use super::super::packed::{Cache, Packed};
        use kube::runtime::reflector::store::Writer;
        use kube::runtime::watcher::Event;
        let mut w = Writer::<Packed<K>>::default();
        let store = w.as_reader();
        w.apply_watcher_event(&Event::Init);
        for json in objects {
            w.apply_watcher_event(&Event::InitApply(
                serde_json::from_value(json.clone()).unwrap(),
            ));
        }
        w.apply_watcher_event(&Event::InitDone);
        Cache::new(store)
    }

    /// Workload caches holding `deployments` and `stateful_sets` (JSON), for the mapping of config and
    /// Service events.
    fn workloads(
        deployments: &[serde_json::Value],
        stateful_sets: &[serde_json::Value],
    ) -> Workloads {
        Workloads {
            deployments: cache(deployments),
            daemon_sets: cache(&[]),
            stateful_sets: cache(stateful_sets),
        }
    }

    fn keys(refs: Vec<ObjectRef<Canary>>) -> Vec<String> {
        let mut names: Vec<String> = refs
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_service_concerns_the_canaries_whose_stateful_sets_it_governs() {
        let stateful_set = |name: &str, service: &str| {
            serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"serviceName": service, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "db", "image": "db:1"}]}}}})
        };
        // "cache" is db's governing Service, and only a container's name in cache's own pods.
        let mut own = stateful_set("cache", "cache-headless");
        own["spec"]["template"]["spec"]["containers"][0]["name"] = "db-headless".into();
        let workloads = workloads(&[], &[stateful_set("db", "db-headless"), own]);
        let index = CanaryIndex::default();
        let mut db = canary("shop", "db", "db", None);
        db.spec.target_ref.kind = Some(crate::api::canary::TargetKind::StatefulSet);
        index.apply(&db);
        let mut cache_canary = canary("shop", "cache", "cache", None);
        cache_canary.spec.target_ref.kind = Some(crate::api::canary::TargetKind::StatefulSet);
        index.apply(&cache_canary);
        // A Deployment's Canary named like the Service, in another namespace.
        index.apply(&canary("ops", "db-headless", "db-headless", None));
        let service = |name: &str| {
            let meta = ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            };
            keys(canaries_of_service(&meta, &index, &workloads))
        };
        assert_eq!(service("db-headless"), ["shop/db"]);
        assert_eq!(service("cache-headless"), ["shop/cache"]);
        // The apex Service, by name as before.
        assert_eq!(service("db"), ["shop/db"]);
        assert!(service("other").is_empty());
    }

    #[test]
    fn a_config_concerns_the_canaries_whose_targets_use_it() {
        let deployment = |name: &str, pod: serde_json::Value| {
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": pod}}})
        };
        let workloads = workloads(
            &[
                deployment(
                    "web",
                    serde_json::json!({"containers": [{"name": "app", "image": "web:1",
                "envFrom": [{"configMapRef": {"name": "settings"}}]}]}),
                ),
                // Names the config's name in another sense only (an image, a container).
                deployment(
                    "api",
                    serde_json::json!({"containers": [{"name": "settings", "image": "api:1"}]}),
                ),
            ],
            &[],
        );
        let index = CanaryIndex::default();
        index.apply(&canary("shop", "web", "web", None));
        index.apply(&canary("shop", "api", "api", None));
        index.apply(&canary("ops", "web", "web", None));
        let config = |name: &str, kind| {
            let meta = ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            };
            keys(canaries_using(&meta, kind, &index, &workloads))
        };
        assert_eq!(config("settings", ConfigKind::ConfigMap), ["shop/web"]);
        assert!(config("settings", ConfigKind::Secret).is_empty());
        assert!(config("setting", ConfigKind::ConfigMap).is_empty());
        assert!(config("other", ConfigKind::ConfigMap).is_empty());
    }

    #[test]
    fn the_index_follows_the_canaries_changes() {
        let index = CanaryIndex::default();
        index.apply(&canary("shop", "web", "web", Some("web-hpa")));
        index.apply(&canary("shop", "api", "api", None));
        index.apply(&canary("ops", "web", "web", None));
        let names = |ns, name| -> Vec<String> {
            index.naming(ns, name).into_iter().map(|r| r.name).collect()
        };
        assert_eq!(names("shop", "web"), vec!["web"]);
        assert_eq!(names("shop", "web-hpa"), vec!["web"]);
        // An apex Service of another name, and an Ingress: a settled Canary hears of their changes.
        let mut other = canary("shop", "front", "front", None);
        other.spec.service.name = Some("www".into());
        other.spec.ingress_ref = serde_json::from_value(serde_json::json!({"name": "edge"})).ok();
        index.apply(&other);
        assert_eq!(names("shop", "www"), vec!["front"]);
        assert_eq!(names("shop", "edge"), vec!["front"]);
        index.delete(&canary_ref(&other));
        assert_eq!(index.targets_in("shop", |_| true).len(), 2);
        // Retargeted: filed under the new name only.
        index.apply(&canary("shop", "web", "web-v2", None));
        assert!(names("shop", "web").is_empty());
        assert!(names("shop", "web-hpa").is_empty());
        assert_eq!(names("shop", "web-v2"), vec!["web"]);
        index.delete(&canary_ref(&canary("shop", "api", "api", None)));
        assert!(names("shop", "api").is_empty());
        assert_eq!(index.targets_in("shop", |_| true).len(), 1);
        // In flight until settled (a new Canary too), for the backlog.
        let mut db = canary("ops", "db", "db", None);
        index.apply(&db);
        assert!(index.in_flight(&canary_ref(&db)));
        db.status = serde_json::from_value(serde_json::json!({"phase": "Succeeded"})).ok();
        index.apply(&db);
        assert!(!index.in_flight(&canary_ref(&db)));
        db.status = serde_json::from_value(serde_json::json!({"phase": "Progressing"})).ok();
        index.apply(&db);
        assert!(index.in_flight(&canary_ref(&db)));
        index.delete(&canary_ref(&db));
        assert!(!index.in_flight(&canary_ref(&db)));
        // A new list: those not in it are gone.
        index.apply(&canary("ops", "db", "db", None));
        index.retain(|key| key.name == "db");
        assert!(names("ops", "web").is_empty());
        assert_eq!(names("ops", "db"), vec!["db"]);
    }
}
