//! The simulator's view of the cluster, from watch caches: routes of every provider, the Services they name,
//! and the ready pods those Services select, with each pod's declared behaviour.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::model::{Behaviour, ServiceKey, SimPod, SimRoute, World};
use crate::routes::{self, RouteSource};

/// The fraction of requests a pod answers with a 500, in [0, 1] (pod template annotation).
pub const ERROR_RATE_ANNOTATION: &str = "trafficsim.serin.dev/error-rate";
/// A pod's mean latency in milliseconds (pod template annotation).
pub const LATENCY_ANNOTATION: &str = "trafficsim.serin.dev/latency-ms";
/// Error rates by image, `<image>=<rate>[,<image>=<rate>...]` (pod template annotation): a pod running
/// one of these images fails that fraction of requests, whatever error-rate says. A faulty release that
/// differs from a good one by its image alone, as in git (the write-back tests).
pub const ERROR_RATE_BY_IMAGE_ANNOTATION: &str = "trafficsim.serin.dev/error-rate-by-image";

/// Starts a watch-backed cache of one kind; the watch retries with backoff on errors.
pub fn reflect<K>(api: Api<K>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        stream
            .for_each(|event| {
                match event {
                    Ok(_) => {
                        CHANGES.fetch_add(1, Ordering::Release);
                    }
                    Err(error) => warn!(%kind, %error, "watch failed; retrying"),
                }
                futures::future::ready(())
            })
            .await;
    });
    reader
}

/// Logs each distinct problem once, not every tick.
#[derive(Default)]
pub struct Warnings(Mutex<HashSet<String>>);

impl Warnings {
    pub fn once(&self, key: &str, message: &str) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.insert(key.to_string()) {
            warn!("{message}");
        }
    }
}

/// Watch events seen, of every kind: the world is rebuilt only when this has moved.
static CHANGES: AtomicU64 = AtomicU64::new(0);

struct CachedWorld {
    changes: u64,
    built_at: Instant,
    build_time: Duration,
    world: Arc<World>,
}

pub struct ClusterView {
    services: Store<Service>,
    pods: Store<Pod>,
    routes: Vec<RouteSource>,
    warnings: Warnings,
    cache: Mutex<Option<CachedWorld>>,
}

impl ClusterView {
    pub fn start(client: &Client, default_rps: f64) -> Self {
        Self {
            services: reflect(Api::all(client.clone())),
            pods: reflect(Api::all(client.clone())),
            routes: routes::sources(client, default_rps),
            warnings: Warnings::default(),
            cache: Mutex::new(None),
        }
    }

    /// The cluster as the simulation sees it, with `extra_routes` (the load tester's loads) beside the
    /// routing objects' routes.
    ///
    /// Rebuilt only when a watch has brought a change, and then no more often than ten times its own
    /// build time: with thousands of routes (the scale benchmark) a rebuild every tick took a core. A
    /// small world is rebuilt at the next tick after a change, as before.
    pub fn world(&self, extra_routes: Vec<SimRoute>) -> Arc<World> {
        let changes = CHANGES.load(Ordering::Acquire);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stale = cache
            .as_ref()
            .is_none_or(|c| c.changes != changes && c.built_at.elapsed() >= c.build_time * 10);
        if stale {
            let started = Instant::now();
            let routes: Vec<_> = self
                .routes
                .iter()
                .flat_map(|source| source(&self.warnings))
                .collect();
            let endpoints = self.endpoints(&routes);
            *cache = Some(CachedWorld {
                changes,
                built_at: Instant::now(),
                build_time: started.elapsed(),
                world: Arc::new(World { routes, endpoints }),
            });
        }
        let world = cache.as_ref().map(|c| c.world.clone()).unwrap_or_default();
        drop(cache);
        if extra_routes.is_empty() {
            return world;
        }
        // The cached world's endpoints stand; only the Services the loads name are looked up.
        let mut endpoints = world.endpoints.clone();
        endpoints.extend(self.endpoints(&extra_routes));
        let mut routes = world.routes.clone();
        routes.extend(extra_routes);
        Arc::new(World { routes, endpoints })
    }

    /// The ready pods of each Service `routes` send requests or their copies to: a mirror that is no
    /// backend (a TraefikService's `mirroring` lists the canary only as a mirror) needs its endpoints too.
    fn endpoints(&self, routes: &[SimRoute]) -> HashMap<ServiceKey, Vec<SimPod>> {
        let wanted: HashSet<&ServiceKey> = routes
            .iter()
            .flat_map(|r| &r.rules)
            .flat_map(|rule| {
                let backends = rule.backends.iter().filter_map(|b| match &b.target {
                    crate::model::BackendTarget::Service(key) => Some(key),
                    crate::model::BackendTarget::Unsupported(_) => None,
                });
                backends.chain(rule.mirrors.iter().map(|m| &m.service))
            })
            .collect();
        // Ready pods by (namespace, label, value): a Service's candidates are the pods carrying one of
        // its selector's labels, not every pod.
        let pods = self.pods.state();
        let mut by_label: HashMap<(&str, &str, &str), Vec<&Pod>> = HashMap::new();
        for pod in pods.iter().filter(|p| is_ready(p)) {
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            for (k, v) in pod.labels() {
                by_label.entry((ns, k, v)).or_default().push(pod);
            }
        }
        let mut endpoints = HashMap::new();
        for key in wanted {
            let Some(service) = self
                .services
                .get(&ObjectRef::new(&key.name).within(&key.namespace))
            else {
                continue;
            };
            let selector = service
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            let candidates = selector
                .iter()
                .next()
                .and_then(|(k, v)| by_label.get(&(key.namespace.as_str(), k.as_str(), v.as_str())));
            let mut selected: Vec<SimPod> = candidates
                .into_iter()
                .flatten()
                .filter(|p| selects(&selector, p.labels()))
                .map(|p| self.sim_pod(p))
                .collect();
            selected.sort_by(|a, b| a.name.cmp(&b.name));
            endpoints.insert(key.clone(), selected);
        }
        endpoints
    }

    fn sim_pod(&self, pod: &Pod) -> SimPod {
        let name = pod.name_any();
        let namespace = pod.namespace().unwrap_or_default();
        let annotations = pod.annotations();
        let mut behaviour = Behaviour::default();
        let read = |key: &str, valid: fn(f64) -> bool, slot: &mut f64| {
            if let Some(v) = annotations.get(key) {
                match v.trim().parse::<f64>() {
                    Ok(x) if valid(x) => *slot = x,
                    _ => self.warnings.once(&format!("{namespace}/{name}/{key}={v}"), &format!(
                        "pod {namespace}/{name}: annotation {key}={v:?} is out of range; using {slot}"
                    )),
                }
            }
        };
        read(
            ERROR_RATE_ANNOTATION,
            |x| (0.0..=1.0).contains(&x),
            &mut behaviour.error_rate,
        );
        read(
            LATENCY_ANNOTATION,
            |x| x.is_finite() && x >= 0.0,
            &mut behaviour.latency_ms,
        );
        if let Some(list) = annotations.get(ERROR_RATE_BY_IMAGE_ANNOTATION) {
            let images: Vec<&str> = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .filter_map(|c| c.image.as_deref())
                .collect();
            for entry in list.split(',') {
                let parsed = entry.rsplit_once('=').and_then(|(image, rate)| {
                    Some((image.trim(), rate.trim().parse::<f64>().ok()?))
                });
                match parsed {
                    Some((image, rate)) if (0.0..=1.0).contains(&rate) => {
                        if images.contains(&image) {
                            behaviour.error_rate = rate;
                        }
                    }
                    _ => self.warnings.once(
                        &format!("{namespace}/{name}/{entry}"),
                        &format!("pod {namespace}/{name}: {ERROR_RATE_BY_IMAGE_ANNOTATION} entry {entry:?} is not <image>=<rate in [0, 1]>"),
                    ),
                }
            }
        }
        SimPod {
            workload: workload_of(pod),
            namespace,
            name,
            behaviour,
        }
    }
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    // A Service without a selector selects no pods (its endpoints are managed by hand).
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The workload a mesh would name for a pod: its Deployment's name for a Deployment's pod (the ReplicaSet's
/// name without the pod-template-hash), else its owner's name, else its own.
fn workload_of(pod: &Pod) -> String {
    let Some(owner) = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
    else {
        return pod.name_any();
    };
    if owner.kind == "ReplicaSet"
        && let Some(hash) = pod.labels().get("pod-template-hash")
        && let Some(deployment) = owner.name.strip_suffix(&format!("-{hash}"))
    {
        return deployment.to_string();
    }
    owner.name.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn deployment_pods_are_named_by_their_deployment() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "podinfo-primary-7d9f8-abcde", "labels": {"pod-template-hash": "7d9f8"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "podinfo-primary-7d9f8", "uid": "u", "controller": true}]}}),
        );
        assert_eq!(workload_of(&p), "podinfo-primary");
        let bare = pod(serde_json::json!({"metadata": {"name": "solo"}}));
        assert_eq!(workload_of(&bare), "solo");
    }

    #[test]
    fn only_ready_live_pods_serve() {
        let ready = pod(
            serde_json::json!({"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        let unready = pod(
            serde_json::json!({"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        let deleting = pod(
            serde_json::json!({"metadata": {"name": "c", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert!(is_ready(&ready));
        assert!(!is_ready(&unready));
        assert!(!is_ready(&deleting));
    }

    #[test]
    fn selectors_need_every_label_and_empty_selects_nothing() {
        let labels = BTreeMap::from([
            ("app".to_string(), "podinfo".to_string()),
            ("tier".to_string(), "web".to_string()),
        ]);
        assert!(selects(
            &BTreeMap::from([("app".to_string(), "podinfo".to_string())]),
            &labels
        ));
        assert!(!selects(
            &BTreeMap::from([("app".to_string(), "other".to_string())]),
            &labels
        ));
        assert!(!selects(&BTreeMap::new(), &labels));
    }
}
