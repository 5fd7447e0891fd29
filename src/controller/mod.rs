//! The controller: watches Canaries and the objects they use into caches, and for each Canary observes,
//! decides (the pure core) and acts, requeueing itself at the analysis interval. No thread per canary.

mod act;
pub mod apply;
pub mod argocd;
mod backlog;
mod client;
pub mod convergence;
pub mod discovery;
mod events;
pub mod gitsource;
pub mod leader;
mod mapping;
pub mod observe;
mod own_writes;
mod packed;
mod reconcile;
mod revert;
mod server;
pub mod shard;
mod slim;
mod workloads;
pub mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::controller::{self as kube_controller, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, error, info, warn};

use crate::api::canary::AutoscalerKind;
use crate::api::{AlertProvider, Canary, MetricTemplate};
use crate::decision::ControllerDefaults;
use crate::metrics::{Analyzer, CheckRunner};
use crate::routing::{RouterKind, router_for};
use crate::telemetry::Metrics;
use crate::workload::configs::ConfigKind;
use crate::workload::metadata::IncludePrefixes;
use crate::workload::scaler;
use apply::FIELD_MANAGER;
use backlog::Backlog;
use events::Events;
use mapping::{canaries_of, canaries_of_service, canaries_using, canary_ref, scoped};
use packed::{Cache, Packed, packed_ref};
use reconcile::{error_policy, reconcile};
pub use workloads::Workloads;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Workload(#[from] crate::workload::WorkloadError),
    #[error(transparent)]
    Routing(#[from] crate::routing::RoutingError),
    #[error(transparent)]
    Scaler(#[from] crate::workload::scaler::ScalerError),
    #[error("{0}")]
    NotOwned(String),
    #[error("a field Serin sets is owned by another manager: {0}")]
    FieldConflict(String),
}

/// When each Canary's next tick is due; a deleted Canary's entry goes with it.
type Schedule = Arc<Mutex<HashMap<ObjectRef<Canary>, std::time::Instant>>>;

/// `serin run`'s settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub defaults: ControllerDefaults,
    pub listen: SocketAddr,
    pub leader_elect: bool,
    pub leader_election_namespace: String,
    pub identity: String,
    /// Watch and act in this namespace only; None: every namespace.
    pub namespace: Option<String>,
    /// The Prometheus of the built-in checks (a Canary's metricsServer overrides it).
    pub metrics_server: String,
    /// How long one metrics query may take.
    pub metrics_timeout: Duration,
    /// Which of a target's labels and annotations its primary carries (--include-label-prefix).
    pub include_label_prefix: IncludePrefixes,
    /// The default alert targets and event webhook, and the cluster's name in alerts.
    pub notify: crate::notify::Defaults,
    /// Every replica acts on its own share of the Canaries, by shard Leases, instead of one leader
    /// (--sharding).
    pub sharding: bool,
    /// How many Canaries are reconciled at once (--max-concurrent-reconciles).
    pub max_concurrent_reconciles: u16,
    /// The roll forward in git's defaults (--write-back-*).
    pub write_back: writer::WriteBackDefaults,
}

pub struct Context {
    pub client: Client,
    pub defaults: ControllerDefaults,
    pub workloads: Workloads,
    pub include_label_prefix: IncludePrefixes,
    pub services: Cache<Service>,
    pub config_maps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
    pub templates: Store<MetricTemplate>,
    pub alert_providers: Store<AlertProvider>,
    /// The caches of the kinds Serin reads untyped, by kind: routes and autoscalers.
    /// The untyped caches by kind, each with the version it watches (one watch per kind: the same
    /// objects are served at every version, e.g. HTTPRoute v1 and v1beta1).
    dynamic: HashMap<String, (ApiResource, Cache<DynamicObject>)>,
    pub recorder: Arc<Events>,
    pub metrics: Arc<Metrics>,
    pub checks: Box<dyn CheckRunner>,
    pub webhooks: crate::webhooks::Caller,
    pub notifier: Arc<crate::notify::Notifier>,
    /// The roll forwards in git at work (only while this replica leads: they go with the Context).
    pub writers: Arc<writer::Writers>,
    /// Failed reconciles in a row, by Canary, for the error policy's backoff.
    failures: Mutex<HashMap<ObjectRef<Canary>, u32>>,
    /// The resourceVersion of each Canary's last status written by this replica.
    written: Mutex<HashMap<ObjectRef<Canary>, String>>,
    /// The generation each Canary's target and primary had after this replica last scaled or promoted
    /// them: a cache holding an older one has not seen the write yet, and must not cause it again.
    pub(crate) own_writes: Arc<own_writes::OwnWrites>,
    /// Settled Canaries from a list, waiting for those in flight; told of each reconcile.
    backlog: Arc<Backlog>,
    /// When each Canary's next tick is due (its last requeue), to measure how late ticks run.
    scheduled: Schedule,
    /// This replica's share of the Canaries when sharding; None: all of them.
    shards: Option<Arc<shard::Shards>>,
}

impl Context {
    fn dynamic_store(&self, ar: &ApiResource) -> Option<&Store<Packed<DynamicObject>>> {
        self.dynamic.get(&ar.kind).map(|(_, cache)| cache.store())
    }

    /// An object of `ar`'s kind from its cache, whichever version the cache watches.
    pub fn dynamic_get(
        &self,
        ar: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<DynamicObject>> {
        let (watched, store) = self.dynamic.get(&ar.kind)?;
        store.get(&ObjectRef::new_with(name, watched.clone()).within(namespace))
    }

    /// The untyped caches a Canary is observed from besides every Canary's: its provider's routes, its
    /// autoscaler's kind.
    fn resources_of(&self, canary: &Canary) -> Vec<ApiResource> {
        let routes = router_for(canary.spec.provider.unwrap_or(self.defaults.provider))
            .map(|k| k.router().resources())
            .unwrap_or_default();
        let scaler = canary
            .spec
            .autoscaler_ref
            .as_ref()
            .map(|r| scaler::resource(scaler::kind_of(r)));
        routes.into_iter().chain(scaler).collect()
    }

    /// The caches that do not hold a full list yet: the ones every Canary is observed from, and the
    /// untyped caches of `extra` kinds.
    fn unsynced(&self, extra: &[ApiResource]) -> Vec<String> {
        let mut missing: Vec<String> = [
            ("Services", synced(self.services.store())),
            ("ConfigMaps", synced(&self.config_maps)),
            ("Secrets", synced(&self.secrets)),
            ("MetricTemplates", synced(&self.templates)),
            ("AlertProviders", synced(&self.alert_providers)),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name.to_string())
        .chain(self.workloads.unsynced().into_iter().map(String::from))
        .collect();
        for ar in extra {
            if !self.dynamic_store(ar).is_some_and(synced) {
                missing.push(format!(
                    "{}s (is its CRD installed, and may Serin list it?)",
                    ar.kind
                ));
            }
        }
        missing
    }

    /// Waits up to `wait` for those caches to hold a full list; Err names those that don't yet.
    async fn caches_synced(&self, extra: &[ApiResource], wait: Duration) -> Result<(), String> {
        let start = tokio::time::Instant::now();
        loop {
            let missing = self.unsynced(extra);
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= wait {
                return Err(missing.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether this replica acts on `canary` (its shard's, or every one without sharding).
    fn owns(&self, canary: &Canary) -> bool {
        self.shards
            .as_ref()
            .is_none_or(|s| s.owns(&canary.namespace().unwrap_or_default(), &canary.name_any()))
    }

    /// `canary` is another replica's now: what this one kept of it goes (its series, its roll forward in
    /// git, its schedule), so nothing of it is said or done twice.
    fn disown(&self, canary: &Canary) {
        let key = canary_ref(canary);
        self.metrics
            .forget_canary(&canary.name_any(), &canary.namespace().unwrap_or_default());
        self.writers.forget(&key);
        self.scheduled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        self.own_writes.forget(&key);
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// A tick of `canary` starts: if it was due by its schedule, how late it is goes to
    /// serin_tick_lateness_seconds.
    fn tick_started(&self, canary: &ObjectRef<Canary>) {
        let due = self
            .scheduled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(canary);
        if let Some(due) = due {
            let now = std::time::Instant::now();
            if now >= due {
                self.metrics
                    .tick_lateness_seconds
                    .observe((now - due).as_secs_f64());
            }
        }
    }

    /// `canary`'s next tick is due in `after`.
    fn schedule(&self, canary: &ObjectRef<Canary>, after: Duration) {
        self.scheduled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(canary.clone(), std::time::Instant::now() + after);
    }

    fn wrote(&self, canary: &ObjectRef<Canary>, resource_version: &str) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(canary.clone(), resource_version.to_string());
    }

    fn last_written(&self, canary: &ObjectRef<Canary>) -> Option<String> {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(canary)
            .cloned()
    }

    /// Counts a failed reconcile of `canary`; returns how many in a row.
    fn failed(&self, canary: &ObjectRef<Canary>) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(canary.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn succeeded(&self, canary: &ObjectRef<Canary>) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(canary);
    }
}

pub async fn run(config: RunConfig) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let fence = if config.leader_elect || config.sharding {
        Arc::new(leader::Fence::default())
    } else {
        leader::Fence::open()
    };
    let client = client::controller_client(
        metrics.api_requests.clone(),
        fence.clone(),
        metrics.fenced_writes.clone(),
    )
    .await?;
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(server::serve(config.listen, metrics.clone(), ready.clone()));
    let recorder = Arc::new(Events::new(client.clone(), FIELD_MANAGER, &config.identity));
    let notifier = Arc::new(crate::notify::Notifier::new(
        notify_queue(metrics.clone(), recorder.clone()),
        config.notify.clone(),
    ));

    if config.sharding {
        return run_sharded(
            &config,
            &client,
            fence,
            &metrics,
            &ready,
            (&recorder, &notifier),
        )
        .await;
    }
    let elector = match config.leader_elect {
        true => Some(leader::LeaderElector::new(
            client::lease_client().await?,
            &config.leader_election_namespace,
            "serin-leader",
            &config.identity,
            leader::Timings::default(),
            fence,
        )),
        false => None,
    };
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown_signal()));
    loop {
        if let Some(e) = &elector {
            // A replica standing by is ready: it is healthy and can take over. Were it not, a Deployment
            // of two replicas could never finish a rolling update (the new pod waits for the lease the old
            // one holds), nor count its standby as available.
            ready.store(true, Ordering::Relaxed);
            metrics.leader.set(0);
            tokio::select! {
                _ = e.acquire() => {}
                _ = shutdown.clone() => return Ok(()),
            }
            // Leading: ready again once this replica's caches have synced.
            ready.store(false, Ordering::Relaxed);
        }
        metrics.leader.set(1);
        let lost = async {
            match &elector {
                Some(e) => e.hold().await,
                None => std::future::pending().await,
            }
        };
        // On SIGTERM the controller stops gracefully (reconciles in flight finish); on a lost lease it is
        // dropped at once (its writes are already refused), its caches with it, and this replica stands by.
        tokio::select! {
            _ = lead(&config, &client, &metrics, &ready, (&recorder, &notifier), None, shutdown.clone()) => {
                if let Some(e) = &elector {
                    e.release().await;
                }
                info!("shut down");
                return Ok(());
            }
            _ = lost => {
                metrics.leader.set(0);
                // The new leader exports the canaries now: series kept here would go stale beside its
                // own (a rolled-back status firing alerts after the new leader promoted).
                metrics.retain_canaries(|_, _| false);
                warn!("lost leadership: stopped acting; standing by");
            }
        }
    }
}

/// `run` with --sharding: the controller runs while this replica is a member of the shards, acting on its
/// share (shard.rs); a lost membership stops it at once (its writes are already refused), and it joins
/// again.
async fn run_sharded(
    config: &RunConfig,
    client: &Client,
    fence: Arc<leader::Fence>,
    metrics: &Arc<Metrics>,
    ready: &Arc<AtomicBool>,
    tools: (&Arc<Events>, &Arc<crate::notify::Notifier>),
) -> anyhow::Result<()> {
    let membership = shard::Membership::new(
        client::lease_client().await?,
        &config.leader_election_namespace,
        &config.identity,
        leader::Timings::default(),
        fence,
    );
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown_signal()));
    loop {
        tokio::select! {
            _ = lead(config, client, metrics, ready, tools, Some(membership.shards()), shutdown.clone()) => {
                membership.release().await;
                info!("shut down");
                return Ok(());
            }
            _ = membership.hold() => {
                metrics.retain_canaries(|_, _| false);
                warn!("lost the shard membership: stopped acting; joining again");
            }
        }
    }
}

/// Runs the controller while this replica leads (or, sharding, is a member): watch caches, the Canary
/// controller, until `stop`.
async fn lead(
    config: &RunConfig,
    client: &Client,
    metrics: &Arc<Metrics>,
    ready: &Arc<AtomicBool>,
    (recorder, notifier): (&Arc<Events>, &Arc<crate::notify::Notifier>),
    shards: Option<Arc<shard::Shards>>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = client.clone();
    // Kept packed like the workloads (packed.rs); each reconcile decodes its Canary once.
    let canaries: Api<Packed<Canary>> = scoped(&client, &config.namespace);
    let wc = watcher::Config::default();
    // Our own reflector of Canaries, to see deletions: a deleted Canary's series leave /metrics (the
    // controller never reconciles an object that is gone).
    let (canary_store, canary_writer) = reflector::store::<Packed<Canary>>();
    // A writer's report triggers a reconcile of its Canary, which folds it into the status.
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let writers = Arc::new(writer::Writers::new(
        config.write_back.clone(),
        wake.clone(),
    ));
    // Settled Canaries from a list wait for those in flight (backlog.rs).
    let backlog = Arc::new(Backlog::default());
    let own_writes = Arc::new(own_writes::OwnWrites::default());
    // Which Canaries an event of another kind concerns, kept from this watch (mapping.rs).
    let index = Arc::new(mapping::CanaryIndex::default());
    let feed_backlog = {
        let (backlog, wake, ready) = (backlog.clone(), wake.clone(), ready.clone());
        let index = index.clone();
        let size = usize::from(config.max_concurrent_reconciles);
        async move {
            backlog
                .feed(wake, size, &ready, |c| index.in_flight(c))
                .await
        }
    };
    // Sharding: when the members change, every Canary is looked at again; each replica acts on its share
    // and lets the rest go. Runs as long as this controller does.
    let reshard = {
        let changes = shards.as_ref().map(|s| s.changes());
        let (store, metrics) = (canary_store.clone(), metrics.clone());
        async move {
            let Some(mut changes) = changes else {
                return std::future::pending().await;
            };
            while changes.changed().await.is_ok() {
                let view = changes.borrow_and_update().clone();
                metrics.shard_members.set(view.members.len() as i64);
                metrics.shard_taking.set(i64::from(view.taking));
                for canary in store.state() {
                    let _ = wake.unbounded_send(canary_ref(&*canary));
                }
            }
        }
    };
    let scheduled: Schedule = Arc::default();
    let canary_events = {
        let (metrics, store, writers) = (metrics.clone(), canary_store.clone(), writers.clone());
        let (index, scheduled, backlog) = (index.clone(), scheduled.clone(), backlog.clone());
        let own_writes = own_writes.clone();
        let listed = |store: &Store<Packed<Canary>>, key: &ObjectRef<Canary>| {
            store.get(&packed_ref(key.clone())).is_some()
        };
        let events = watcher(canaries, wc.clone())
            .default_backoff()
            .reflect(canary_writer)
            .map_ok(move |event| match event {
                watcher::Event::Apply(c) => {
                    if let Some(canary) = c.unpack() {
                        index.apply(&canary);
                    }
                    Some(c)
                }
                // From a list: a settled Canary waits for those in flight.
                watcher::Event::InitApply(c) => match c.unpack() {
                    Some(canary) => {
                        index.apply(&canary);
                        let key = canary_ref(&canary);
                        if !index.in_flight(&key) {
                            backlog.hold(key);
                            None
                        } else {
                            Some(c)
                        }
                    }
                    None => Some(c),
                },
                watcher::Event::Delete(c) => {
                    let key = canary_ref(&c);
                    index.delete(&key);
                    scheduled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    metrics.forget_canary(&c.name_any(), &c.namespace().unwrap_or_default());
                    writers.forget(&key);
                    own_writes.forget(&key);
                    None
                }
                // A new list: Canaries deleted while the watch was down are simply not in it.
                watcher::Event::InitDone => {
                    index.retain(|key| listed(&store, key));
                    metrics.retain_canaries(|ns, name| {
                        store.get(&ObjectRef::new(name).within(ns)).is_some()
                    });
                    writers.retain(|key| listed(&store, key));
                    own_writes.retain(|key| listed(&store, key));
                    scheduled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .retain(|key, _| listed(&store, key));
                    backlog.listed();
                    None
                }
                watcher::Event::Init => {
                    backlog.listing();
                    None
                }
            })
            .try_filter_map(|c| futures::future::ready(Ok(c)));
        without_errors(events, "Canary")
    };
    let controller = Controller::for_stream(canary_events, canary_store.clone())
        .reconcile_on(woken.map(packed_ref));

    macro_rules! cache {
        ($kind:ty) => {{
            let (reader, writer) = reflector::store::<$kind>();
            let stream = reflector::reflector(
                writer,
                watcher(scoped::<$kind>(&client, &config.namespace), wc.clone()).modify(slim::slim),
            )
            .default_backoff()
            .touched_objects();
            (reader, without_errors(stream, stringify!($kind)))
        }};
    }
    // The kinds each Canary has several of are kept packed (packed.rs); slimmed as they are packed.
    macro_rules! packed {
        ($kind:ty) => {{
            let (reader, writer) = reflector::store::<Packed<$kind>>();
            let stream = reflector::reflector(
                writer,
                watcher(
                    scoped::<Packed<$kind>>(&client, &config.namespace),
                    wc.clone(),
                ),
            )
            .default_backoff()
            .touched_objects();
            (
                Cache::new(reader),
                without_errors(stream, stringify!($kind)),
            )
        }};
    }
    let (deployments, deployment_events) = packed!(Deployment);
    let (daemon_sets, daemon_set_events) = packed!(DaemonSet);
    let (stateful_sets, stateful_set_events) = packed!(StatefulSet);
    let (services, service_events) = packed!(Service);
    let (config_maps, config_map_events) = cache!(ConfigMap);
    let (secrets, secret_events) = cache!(Secret);
    // MetricTemplates are read when checks run; a change to one needs no reconcile of its own.
    let (templates, template_events) = cache!(MetricTemplate);
    // AlertProviders are read when a notice is sent; like templates, they only feed a cache.
    let (alert_providers, alert_provider_events) = cache!(AlertProvider);

    let workloads = Workloads {
        deployments,
        daemon_sets,
        stateful_sets,
    };
    let mut dynamic = HashMap::new();
    let mut controller = {
        let (i, i1, i2, i5) = (index.clone(), index.clone(), index.clone(), index.clone());
        let w2 = workloads.clone();
        let (i3, w3) = (index.clone(), workloads.clone());
        let (i4, w4) = (index.clone(), workloads.clone());
        // At the start, settled Canaries wait for those in flight, whichever watch brings them.
        let packed = {
            let (backlog, index) = (backlog.clone(), index.clone());
            move |refs: Vec<ObjectRef<Canary>>| {
                backlog
                    .admit(refs, |c| index.in_flight(c))
                    .into_iter()
                    .map(packed_ref)
            }
        };
        let (packed1, packed2, packed3, packed4, packed5) = (
            packed.clone(),
            packed.clone(),
            packed.clone(),
            packed.clone(),
            packed.clone(),
        );
        controller
            .watches_stream(deployment_events, move |d| {
                packed(canaries_of(d.meta(), &i))
            })
            .watches_stream(daemon_set_events, move |d| {
                packed1(canaries_of(d.meta(), &i1))
            })
            .watches_stream(stateful_set_events, move |d| {
                packed2(canaries_of(d.meta(), &i5))
            })
            .watches_stream(service_events, move |d| {
                packed3(canaries_of_service(d.meta(), &i2, &w2))
            })
            .watches_stream(config_map_events, move |c| {
                packed4(canaries_using(&c.metadata, ConfigKind::ConfigMap, &i3, &w3))
            })
            .watches_stream(secret_events, move |c| {
                packed5(canaries_using(&c.metadata, ConfigKind::Secret, &i4, &w4))
            })
    };
    let routes = RouterKind::ALL
        .into_iter()
        .flat_map(|kind| kind.router().resources());
    let scalers = [
        AutoscalerKind::HorizontalPodAutoscaler,
        AutoscalerKind::ScaledObject,
    ]
    .into_iter()
    .map(scaler::resource);
    let mut optional: Vec<ApiResource> = Vec::new();
    for ar in routes.chain(scalers) {
        if !optional
            .iter()
            .any(|o| o.kind == ar.kind && o.group == ar.group)
        {
            optional.push(ar);
        }
    }
    for ar in optional {
        // A mesh's or KEDA's kinds are watched only where the cluster serves them: a watch on a kind
        // without its CRD fails for ever, filling the log. Canaries that need one wait, naming it.
        if !discovery::served(&client, &ar).await {
            info!(
                kind = %ar.kind,
                api_version = %ar.api_version,
                "not watched: this cluster does not serve it (install its CRD, then restart Serin)"
            );
            continue;
        }
        let api = match &config.namespace {
            Some(ns) => Api::<Packed<DynamicObject>>::namespaced_with(client.clone(), ns, &ar),
            None => Api::<Packed<DynamicObject>>::all_with(client.clone(), &ar),
        };
        // Nor where Serin may not list it (the chart grants each provider's group only when asked): a
        // watch refused for ever kept every other cache from syncing, and no Canary moved at all.
        if let Err(kube::Error::Api(status)) =
            api.list_metadata(&ListParams::default().limit(1)).await
            && status.code == 403
        {
            warn!(
                kind = %ar.kind,
                api_version = %ar.api_version,
                "not watched: Serin may not list it (RBAC; the chart's rbac.providers); Canaries that need it wait. Grant list and watch, then restart Serin"
            );
            continue;
        }
        let writer = reflector::store::Writer::<Packed<DynamicObject>>::new(ar.clone());
        let reader = Cache::new(writer.as_reader());
        let stream = reflector::reflector(writer, watcher(api, wc.clone()))
            .default_backoff()
            .touched_objects();
        let stream = without_errors(stream, "optional kind");
        let (i, backlog) = (index.clone(), backlog.clone());
        controller = controller.watches_stream_with(
            stream,
            move |r| {
                backlog
                    .admit(canaries_of(r.meta(), &i), |c| i.in_flight(c))
                    .into_iter()
                    .map(packed_ref)
            },
            ar.clone(),
        );
        dynamic.insert(ar.kind.clone(), (ar.clone(), reader));
    }

    let recorder = recorder.clone();
    let webhooks = match crate::webhooks::Caller::new() {
        Ok(w) => w,
        Err(e) => {
            error!(error = %e, "building the webhooks' HTTP client");
            return;
        }
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        defaults: config.defaults.clone(),
        workloads,
        include_label_prefix: config.include_label_prefix.clone(),
        services: services.clone(),
        config_maps: config_maps.clone(),
        secrets: secrets.clone(),
        templates: templates.clone(),
        dynamic,
        recorder,
        metrics: metrics.clone(),
        checks: Box::new(Analyzer::new(
            templates,
            secrets,
            config.metrics_server.clone(),
            config.defaults.provider,
            config.metrics_timeout,
            metrics.metric_queries.clone(),
        )),
        webhooks,
        notifier: notifier.clone(),
        writers,
        alert_providers: alert_providers.clone(),
        failures: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
        own_writes,
        backlog: backlog.clone(),
        scheduled,
        shards,
    });

    let synced = {
        let (ctx, ready) = (ctx.clone(), ready.clone());
        async move {
            while let Err(missing) = ctx.caches_synced(&[], Duration::from_secs(60)).await {
                warn!(%missing, "caches not synced yet");
            }
            ready.store(true, Ordering::Relaxed);
            info!("caches synced");
        }
    };
    info!("controller started");
    let controller = controller
        .with_config(
            kube_controller::Config::default().concurrency(config.max_concurrent_reconciles),
        )
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok(_) => {}
                // Logged with its backoff by the error policy.
                Err(kube_controller::Error::ReconcilerFailed(..)) => {}
                // Deleted before its turn came: nothing to do.
                Err(kube_controller::Error::ObjectNotFound(o)) => {
                    debug!(object = %o, "gone before its reconcile");
                    backlog.done(&(*o).into_kind_unchecked::<Canary>(()));
                }
                Err(kube_controller::Error::QueueError(e)) => {
                    warn!(error = %e, "watching Canaries")
                }
                Err(e) => error!(error = %e, "the controller's runner failed"),
            }
            futures::future::ready(())
        });
    // MetricTemplates are read when checks run; their stream only feeds the cache.
    let templates = futures::stream::select(
        template_events.map(|_| ()),
        alert_provider_events.map(|_| ()),
    )
    .for_each(|_| futures::future::ready(()));
    tokio::select! {
        _ = controller => {}
        _ = futures::future::join4(templates, synced, reshard, feed_backlog) => {}
    }
}

/// `stream` with its watch errors logged here and kept out of the controller's queue (the watcher retries
/// them with its backoff). kube-runtime's applier splits the queue into its Ok and Err items over one
/// peekable stream, and an Err peeked while taking an Ok wakes no one: at start-up, before any reconcile
/// timer could wake the task, the whole queue stalled for good, and every cache fed by it with it (seen
/// with a kind Serin may not list: no Canary moved, and SIGTERM never ended the process).
fn without_errors<T: Send + 'static>(
    stream: impl futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static,
    what: &'static str,
) -> impl futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static {
    stream.filter_map(move |item| {
        futures::future::ready(match item {
            Ok(object) => Some(Ok(object)),
            Err(e) => {
                warn!(watch = what, error = %e, "watch error; retrying with backoff");
                None
            }
        })
    })
}

/// The notifications' delivery queue: 1024 items, 8 sends at once; a delivery that fails for good is told
/// in a NotificationFailed event on its Canary.
fn notify_queue(
    metrics: Arc<Metrics>,
    recorder: Arc<Events>,
) -> Arc<crate::notify::delivery::Queue> {
    let counter = metrics.clone();
    let on_failure: crate::notify::delivery::OnFailure = Arc::new(move |d, why| {
        let (recorder, metrics) = (recorder.clone(), metrics.clone());
        let regarding = d.regarding.clone();
        let msg = format!(
            "Notification to {} ({}) failed: {why}",
            d.target, d.provider
        );
        tokio::spawn(async move {
            reconcile::record(
                &recorder,
                &metrics,
                &regarding,
                true,
                "NotificationFailed",
                &msg,
            )
            .await;
        });
    });
    crate::notify::delivery::Queue::start(
        1024,
        8,
        crate::notify::delivery::Retry::default(),
        counter,
        on_failure,
    )
}

/// Whether a watch cache holds its first full list.
fn synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
