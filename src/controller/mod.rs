//! The controller: watches Canaries and the objects they use into caches, and for each Canary observes,
//! decides (the pure core) and acts, requeueing itself at the analysis interval. No thread per canary.

mod act;
pub mod apply;
mod client;
mod events;
pub mod leader;
pub mod observe;
mod revert;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use crate::api::MetricTemplate;
use crate::api::{Canary, CanaryStatus, ConditionType};
use crate::decision::{ControllerDefaults, Decision, Outcome, decide};
use crate::metrics::{Analyzer, CheckRunner};
use crate::routing::RouterKind;
use crate::telemetry::Metrics;
use apply::FIELD_MANAGER;
use events::Events;
use observe::{Blocked, observe};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Workload(#[from] crate::workload::WorkloadError),
    #[error(transparent)]
    Routing(#[from] crate::routing::RoutingError),
    #[error("{0}")]
    NotOwned(String),
    #[error("a field Serin sets is owned by another manager: {0}")]
    FieldConflict(String),
}

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
}

/// An Api over the watched namespace, or all of them.
fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
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

pub struct Context {
    pub client: Client,
    pub defaults: ControllerDefaults,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub config_maps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
    routes: HashMap<String, Store<DynamicObject>>,
    pub recorder: Events,
    pub metrics: Arc<Metrics>,
    pub checks: Box<dyn CheckRunner>,
}

impl Context {
    pub fn route_store(&self, ar: &ApiResource) -> Option<&Store<DynamicObject>> {
        self.routes.get(&ar.kind)
    }
}

/// Canaries an object concerns: those owning it, and those targeting it (by name in its namespace).
fn canaries_of(meta: &kube::api::ObjectMeta, canaries: &Store<Canary>) -> Vec<ObjectRef<Canary>> {
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
            .filter(|c| {
                c.spec.target_ref.name == name
                    || c.status
                        .as_ref()
                        .and_then(|s| s.tracked_configs.as_ref())
                        .is_some_and(|t| t.keys().any(|k| k.ends_with(&format!("/{name}"))))
            })
            .map(|c| ObjectRef::from_obj(&**c)),
    );
    refs
}

pub async fn run(config: RunConfig) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let client = client::counted_client(metrics.api_requests.clone()).await?;
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(server::serve(config.listen, metrics.clone(), ready.clone()));

    let elector = config.leader_elect.then(|| {
        Arc::new(leader::LeaderElector::new(
            client.clone(),
            &config.leader_election_namespace,
            "serin-leader",
            &config.identity,
            Duration::from_secs(15),
        ))
    });
    if let Some(e) = &elector {
        e.acquire().await;
    }

    let canaries: Api<Canary> = scoped(&client, &config.namespace);
    let wc = watcher::Config::default();
    let controller = Controller::new(canaries, wc.clone());
    let canary_store = controller.store();

    macro_rules! cache {
        ($kind:ty) => {{
            let (reader, writer) = reflector::store::<$kind>();
            let stream = reflector::reflector(
                writer,
                watcher(scoped::<$kind>(&client, &config.namespace), wc.clone()),
            )
            .default_backoff()
            .touched_objects();
            (reader, stream)
        }};
    }
    let (deployments, deployment_events) = cache!(Deployment);
    let (services, service_events) = cache!(Service);
    let (config_maps, config_map_events) = cache!(ConfigMap);
    let (secrets, secret_events) = cache!(Secret);
    // MetricTemplates are read when checks run; a change to one needs no reconcile of its own.
    let (templates, template_events) = cache!(MetricTemplate);
    let templates_synced = templates.clone();
    tokio::spawn(template_events.for_each(|_| futures::future::ready(())));

    let mut routes = HashMap::new();
    let mut controller = {
        let s = canary_store.clone();
        let s2 = canary_store.clone();
        let s3 = canary_store.clone();
        let s4 = canary_store.clone();
        controller
            .watches_stream(deployment_events, move |d| canaries_of(&d.metadata, &s))
            .watches_stream(service_events, move |d| canaries_of(&d.metadata, &s2))
            .watches_stream(config_map_events, move |d| canaries_of(&d.metadata, &s3))
            .watches_stream(secret_events, move |d| canaries_of(&d.metadata, &s4))
    };
    for kind in [RouterKind::GatewayApi, RouterKind::Kubernetes] {
        let Some(ar) = kind.router().resource() else {
            continue;
        };
        let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let reader = writer.as_reader();
        let api = match &config.namespace {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
            None => Api::<DynamicObject>::all_with(client.clone(), &ar),
        };
        let stream = reflector::reflector(writer, watcher(api, wc.clone()))
            .default_backoff()
            .touched_objects();
        let s = canary_store.clone();
        controller = controller.watches_stream_with(
            stream,
            move |r| canaries_of(&r.metadata, &s),
            ar.clone(),
        );
        routes.insert(ar.kind.clone(), reader);
    }

    let recorder = Events::new(client.clone(), FIELD_MANAGER, &config.identity);
    let ctx = Arc::new(Context {
        client,
        defaults: config.defaults.clone(),
        deployments: deployments.clone(),
        services: services.clone(),
        config_maps: config_maps.clone(),
        secrets: secrets.clone(),
        routes,
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
    });

    // Stop on SIGTERM/ctrl-c, or when leadership is lost (another replica may already be acting).
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        match elector {
            Some(e) => tokio::select! {
                _ = e.hold() => warn!("lost leadership: stopping"),
                _ = shutdown_signal() => info!("shutting down"),
            },
            None => shutdown_signal().await,
        }
        let _ = stop.send(());
    });
    let shutdown = async move {
        let _ = stopped.await;
    };
    {
        let (ctx, ready) = (ctx.clone(), ready.clone());
        tokio::spawn(async move {
            let _ = futures::join!(
                ctx.deployments.wait_until_ready(),
                ctx.services.wait_until_ready(),
                ctx.config_maps.wait_until_ready(),
                ctx.secrets.wait_until_ready(),
                templates_synced.wait_until_ready()
            );
            ready.store(true, Ordering::Relaxed);
            info!("caches synced");
        });
    }
    info!("controller started");
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
    Ok(())
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

fn error_policy(canary: Arc<Canary>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(canary = %canary.name_any(), namespace = %canary.namespace().unwrap_or_default(), %error, "reconcile failed");
    ctx.metrics.reconciled(Duration::ZERO, true);
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("canary", namespace = %canary.namespace().unwrap_or_default(), name = %canary.name_any());
    let start = Instant::now();
    let result = reconcile_one(&canary, &ctx).instrument(span).await;
    ctx.metrics.reconciled(start.elapsed(), result.is_err());
    result
}

async fn reconcile_one(canary: &Canary, ctx: &Context) -> Result<Action, Error> {
    if canary.meta().deletion_timestamp.is_some() {
        if revert::has_finalizer(canary) {
            return revert::revert(ctx, canary).await;
        }
        ctx.metrics
            .forget_canary(&canary.name_any(), &canary.namespace().unwrap_or_default());
        return Ok(Action::await_change());
    }
    if canary.spec.revert_on_deletion != revert::has_finalizer(canary) {
        revert::set_finalizer(ctx, canary, canary.spec.revert_on_deletion).await?;
        // The finalizer's change brings the Canary back through the watch.
        return Ok(Action::await_change());
    }
    let obs = match observe(ctx, canary) {
        Ok(obs) => obs,
        Err(blocked) => return report_blocked(ctx, canary, &blocked).await,
    };
    let decision: Decision = match decide(&obs.observed) {
        Outcome::Act(d) => *d,
        Outcome::RunChecks => {
            let mut observed = obs.observed.clone();
            let at = observed.now.as_millisecond() as f64 / 1000.0;
            let round = ctx.checks.run(canary, at).await;
            ctx.metrics.check_rounds.inc();
            ctx.metrics.observe_checks(
                &canary.name_any(),
                &canary.namespace().unwrap_or_default(),
                &round.results,
            );
            observed.checks = Some(round);
            match decide(&observed) {
                Outcome::Act(d) => *d,
                // The core asks once per tick; a second ask would be a bug in it.
                Outcome::RunChecks => unreachable!("the decision core asked for checks twice"),
            }
        }
    };
    let mut status = decision.status.clone();
    status.tracked_configs = (!obs.tracked_configs.is_empty()).then(|| obs.tracked_configs.clone());
    let acted = act::act(ctx, canary, &obs, &decision.desired).await;
    if let Ok(writes) = &acted {
        ctx.metrics.api_writes.inc_by(u64::from(*writes));
    }
    let old = canary.status.clone().unwrap_or_default();
    let status = match &acted {
        Ok(_) => status,
        // Nothing moves when an act fails: keep the old status and say why, so the next tick retries.
        Err(e) => with_error(old.clone(), obs.observed.generation, e),
    };
    write_status(ctx, canary, &old, &status).await?;
    if acted.is_ok() {
        for event in &decision.events {
            publish(
                ctx,
                canary,
                event.warning,
                event.reason.as_str(),
                &event.message,
            )
            .await;
        }
    }
    let entered = (status.phase != old.phase)
        .then_some(status.phase)
        .flatten();
    ctx.metrics.observe_canary(
        &canary.name_any(),
        &canary.namespace().unwrap_or_default(),
        status.phase,
        status.canary_weight,
        entered,
    );
    match acted {
        Ok(_) => Ok(Action::requeue(decision.requeue_after)),
        Err(
            Error::NotOwned(_) | Error::FieldConflict(_) | Error::Routing(_) | Error::Workload(_),
        ) => Ok(Action::requeue(Duration::from_secs(60))),
        Err(e) => Err(e),
    }
}

fn with_error(mut status: CanaryStatus, generation: i64, e: &Error) -> CanaryStatus {
    let reason = match e {
        Error::NotOwned(_) => "ObjectNotOwned",
        Error::FieldConflict(_) => "FieldConflict",
        Error::Routing(_) | Error::Workload(_) => "InvalidSpec",
        Error::Kube(_) => "APIError",
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let message = e.to_string();
    crate::decision::set_condition(
        &mut status,
        ConditionType::Ready,
        "False",
        reason,
        &message,
        now,
        generation,
    );
    if !matches!(e, Error::Kube(_)) {
        crate::decision::set_condition(
            &mut status,
            ConditionType::Stalled,
            "True",
            reason,
            &message,
            now,
            generation,
        );
    }
    status
}

async fn report_blocked(
    ctx: &Context,
    canary: &Canary,
    blocked: &Blocked,
) -> Result<Action, Error> {
    let old = canary.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let generation = canary.metadata.generation.unwrap_or(0);
    let (reason, stalled) = match blocked {
        Blocked::TargetNotFound(_) => ("TargetNotFound", "False"),
        Blocked::Workload(_) => ("InvalidTarget", "True"),
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let message = blocked.to_string();
    crate::decision::set_condition(
        &mut status,
        ConditionType::Ready,
        "False",
        reason,
        &message,
        now,
        generation,
    );
    crate::decision::set_condition(
        &mut status,
        ConditionType::Stalled,
        stalled,
        reason,
        &message,
        now,
        generation,
    );
    status.observed_generation = Some(generation);
    if status != old {
        publish(ctx, canary, true, reason, &message).await;
    }
    write_status(ctx, canary, &old, &status).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The one status write of a tick, skipped when nothing changed.
async fn write_status(
    ctx: &Context,
    canary: &Canary,
    old: &CanaryStatus,
    status: &CanaryStatus,
) -> Result<(), Error> {
    if status == old {
        return Ok(());
    }
    let api: Api<Canary> =
        Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "status": status});
    api.patch_status(
        &canary.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics.api_writes.inc();
    Ok(())
}

async fn publish(ctx: &Context, canary: &Canary, warning: bool, reason: &str, message: &str) {
    ctx.metrics.api_writes.inc();
    let regarding = canary.object_ref(&());
    if let Err(e) = ctx
        .recorder
        .publish(&regarding, warning, reason, message)
        .await
    {
        warn!(error = %e, reason, "publishing an event");
    }
}
