//! revertOnDeletion: a finalizer that, when the Canary is deleted, leaves traffic on something that serves,
//! then lets the Canary go. Without the field, no finalizer is added. (kube's finalizer helper always adds
//! its finalizer; ours exists only while revertOnDeletion is set, so we keep our own small patch.)
//!
//! - The target holds the last promoted revision: it is scaled to the primary's replicas; once its pods
//!   are ready, the route is handed back (all traffic to the apex Service, no longer owned by the Canary)
//!   and the apex Service selects the target's pods. Nothing serving is removed before its replacement
//!   serves.
//! - The target holds another revision (one that failed its analysis, or one not analysed yet), or it did
//!   not get ready within progressDeadlineSeconds: traffic never moves to it. The primary keeps serving:
//!   it, its configs, the apex Service and the route are released from the Canary (so the garbage
//!   collector keeps them), the target is scaled to zero when the route sends it nothing, and a Warning
//!   event says so.
//!
//! Either way the finalizer goes within progressDeadlineSeconds of the deletion.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::apply::{FIELD_MANAGER, apply, to_json};
use super::observe::observe;
use super::reconcile::publish;
use super::{Context, Error};
use crate::api::Canary;
use crate::api::canary::AutoscalerKind;
use crate::decision::{Readiness, Settings};
use crate::routing::services::{give_back, ports, services, taken_over};
use crate::routing::{ServiceNames, router_for};
use crate::vocabulary::Traffic;
use crate::workload::primary::{primary_name, selectors};
use crate::workload::readiness::readiness;
use crate::workload::scale::{ScaleTo, is_at, scale_apply};
use crate::workload::scaler;
use crate::workload::{PRIMARY_SUFFIX, Workload, WorkloadKind};

pub const FINALIZER: &str = "serin.dev/revert-on-deletion";

/// When progressDeadlineSeconds can't be read from the spec.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);

pub fn has_finalizer(canary: &Canary) -> bool {
    canary.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds or removes Serin's finalizer, conditional on the Canary's resourceVersion.
pub async fn set_finalizer(ctx: &Context, canary: &Canary, present: bool) -> Result<(), Error> {
    let mut finalizers: Vec<String> = canary
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.to_string());
    }
    let api: Api<Canary> =
        Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": canary.resource_version()}});
    api.patch(
        &canary.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    ctx.metrics.api_writes.inc();
    Ok(())
}

/// What the deletion of this Canary leaves serving.
#[derive(Debug, PartialEq, Eq)]
enum Revert {
    /// The target holds the last promoted revision: it takes the traffic back once ready.
    ToTarget,
    /// The primary keeps serving, and why.
    KeepPrimary(String),
}

/// One step of reverting a deleted Canary; the finalizer goes once traffic is on something that serves.
pub async fn revert(ctx: &Context, canary: &Canary) -> Result<Action, Error> {
    let ns = canary.namespace().unwrap_or_default();
    let target_name = &canary.spec.target_ref.name;
    let Some(target) = WorkloadKind::of(canary.spec.target_ref.kind)
        .and_then(|kind| ctx.workloads.get(kind, &ns, target_name))
    else {
        set_finalizer(ctx, canary, false).await?;
        return Ok(Action::await_change());
    };
    let deadline = Settings::resolve(&canary.spec, &ctx.defaults)
        .map(|s| s.progress_deadline)
        .unwrap_or(DEFAULT_DEADLINE);
    let since = canary
        .meta()
        .deletion_timestamp
        .as_ref()
        .and_then(|t| {
            Duration::try_from(k8s_openapi::jiff::Timestamp::now().duration_since(t.0)).ok()
        })
        .unwrap_or_default();
    let promoted = canary
        .status
        .as_ref()
        .and_then(|s| s.last_promoted_spec.clone());
    let observed = observe(ctx, canary);
    let plan = match &observed {
        Ok(obs) if !obs.observed.target.missing_configs.is_empty() => Revert::KeepPrimary(format!(
            "{target_name} needs {}, which does not exist",
            obs.observed.target.missing_configs.join(", ")
        )),
        Ok(obs) if promoted.as_deref() == Some(obs.observed.target.revision.as_str()) => {
            if since >= deadline {
                Revert::KeepPrimary(format!(
                    "{target_name} was not ready within the progress deadline of {deadline:?}"
                ))
            } else {
                Revert::ToTarget
            }
        }
        Ok(obs) => Revert::KeepPrimary(format!(
            "{target_name} holds revision {}, not the last promoted {} (it failed its analysis or was not analysed)",
            obs.observed.target.revision,
            promoted.as_deref().unwrap_or("(none)")
        )),
        Err(e) => Revert::KeepPrimary(e.to_string()),
    };
    match plan {
        Revert::ToTarget => {
            let autoscaler = observed.ok().and_then(|o| o.scaler);
            to_target(ctx, canary, &target, autoscaler.as_deref()).await
        }
        Revert::KeepPrimary(why) => {
            // The target may go to zero only when the route, read back, sends it nothing already (or
            // there is no route): traffic before pods, as everywhere.
            let unrouted = match &observed {
                Ok(obs) => match obs.observed.routed {
                    Some(Traffic::Split(w)) => w.canary == 0,
                    Some(Traffic::Matched | Traffic::Mirrored) => false,
                    None => obs.router.is_none_or(|r| r.resources().is_empty()),
                },
                Err(_) => false,
            };
            keep_primary(ctx, canary, &why, unrouted).await
        }
    }
}

/// `autoscaler`: the target's, as observed.
async fn to_target(
    ctx: &Context,
    canary: &Canary,
    target: &Workload,
    autoscaler: Option<&DynamicObject>,
) -> Result<Action, Error> {
    let ns = canary.namespace().unwrap_or_default();
    let target_name = target.name();
    let kind = target.kind();
    let primary = match ctx.workloads.get(kind, &ns, &primary_name(&target_name)) {
        Some(primary) => Some(primary),
        // Not in the cache (created moments before the Canary was deleted, and the cache lags): the API
        // server's, or the target got one replica instead of the primary's.
        None => Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &ns, &kind.resource())
            .get_opt(&primary_name(&target_name))
            .await?
            .and_then(|o| Workload::from_dynamic(kind, o).ok()),
    };
    let replicas = primary
        .as_ref()
        .and_then(Workload::replicas)
        .filter(|r| *r > 0)
        .unwrap_or(1);
    let to = ScaleTo::Running(replicas);
    let scale = scale_apply(kind, &ns, &target_name, to);
    // Sent every time and judged from the answer, not the cache: a cache that has not yet seen the scale
    // to zero of the last tick would show the target ready while its pods are going.
    let answer = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &ns, &kind.resource())
        .patch(
            &target_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&scale),
        )
        .await?;
    let mut writes = 1;
    // The target's own ScaledObject scales it again from here.
    if let (Some(r), Some(so)) = (&canary.spec.autoscaler_ref, autoscaler)
        && scaler::kind_of(r) == AutoscalerKind::ScaledObject
        && let Some(want) = scaler::pause_change(so, false, FIELD_MANAGER)
    {
        let ar = scaler::resource(AutoscalerKind::ScaledObject);
        writes += u32::from(apply(&ctx.client, &ar, None, &want, true).await?);
    }
    let stored = Workload::from_dynamic(kind, answer).ok();
    let ready = stored
        .as_ref()
        .is_some_and(|w| is_at(w, to) && readiness(w, 100) == Readiness::Ready);
    if !ready {
        // Traffic stays on the primary until the target's pods serve.
        ctx.metrics.api_writes.inc_by(u64::from(writes));
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    writes += hand_back_route(ctx, canary).await?;
    let (target_selector, _) = selectors(target)?;
    writes += release_apex(ctx, canary, &target_selector, target, true).await?;
    ctx.metrics.api_writes.inc_by(u64::from(writes));
    let apex = ServiceNames::of(canary).apex;
    let running = match kind {
        WorkloadKind::DaemonSet => "runs on its nodes again".to_string(),
        WorkloadKind::Deployment | WorkloadKind::StatefulSet => {
            format!("runs {replicas} replicas again")
        }
    };
    let message = format!(
        "{kind} {target_name} {running} and Service {apex} selects it; the route sends all traffic to {apex}"
    );
    publish(ctx, canary, false, "Reverted", &message).await;
    set_finalizer(ctx, canary, false).await?;
    Ok(Action::await_change())
}

/// `unrouted`: the route sends the target nothing (read back), so its pods may go.
async fn keep_primary(
    ctx: &Context,
    canary: &Canary,
    why: &str,
    unrouted: bool,
) -> Result<Action, Error> {
    let ns = canary.namespace().unwrap_or_default();
    let target_name = &canary.spec.target_ref.name;
    let primary_name = primary_name(target_name);
    let mut writes = hand_back_route(ctx, canary).await?;
    // The revision the target holds is not to serve: no pods for it (a Canary deleted the moment it failed
    // could otherwise leave them running, before its scale to zero of the next tick).
    if unrouted
        && let Some(kind) = WorkloadKind::of(canary.spec.target_ref.kind)
        && let Some(target) = ctx.workloads.get(kind, &ns, target_name)
        && !is_at(&target, ScaleTo::Zero)
    {
        let scale = scale_apply(kind, &ns, target_name, ScaleTo::Zero);
        Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &ns, &kind.resource())
            .patch(
                target_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&scale),
            )
            .await?;
        writes += 1;
    }
    let primary = WorkloadKind::of(canary.spec.target_ref.kind)
        .and_then(|kind| ctx.workloads.get(kind, &ns, &primary_name));
    if let Some(primary) = &primary {
        let (primary_selector, _) = selectors(primary)?;
        // The primary's own labels are its selector already; the apex Service keeps selecting them (one
        // Serin took over keeps its hands-off annotations: a GitOps tool must not point it back at the
        // target now).
        writes += release_apex(ctx, canary, &primary_selector, primary, false).await?;
        writes += release(ctx, canary, &primary.kind().resource(), primary.meta()).await?;
        // A StatefulSet's governing Service copy, or its pods would lose their DNS names.
        if let Workload::StatefulSet(sts) = primary
            && let Some(name) = sts.spec.as_ref().and_then(|s| s.service_name.clone())
            && let Some(svc) = ctx.services.get(&ObjectRef::new(&name).within(&ns))
            && owned_copy(&svc.metadata, canary)
        {
            let ar = ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());
            writes += release(ctx, canary, &ar, &svc.metadata).await?;
        }
        // Its autoscaler, or it would be stuck at its replicas of the moment.
        if let Some(r) = &canary.spec.autoscaler_ref {
            let ar = scaler::resource(scaler::kind_of(r));
            let name = scaler::primary_scaler_name(&r.name);
            if let Some(s) = ctx.dynamic_get(&ar, &ns, &name) {
                writes += release(ctx, canary, &ar, &s.metadata).await?;
            }
        }
        // Its configs, or its pods could not start again once the collector took them.
        for cm in ctx.config_maps.state() {
            if owned_copy(&cm.metadata, canary) {
                let ar = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
                writes += release(ctx, canary, &ar, &cm.metadata).await?;
            }
        }
        for s in ctx.secrets.state() {
            if owned_copy(&s.metadata, canary) {
                let ar = ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&());
                writes += release(ctx, canary, &ar, &s.metadata).await?;
            }
        }
    }
    ctx.metrics.api_writes.inc_by(u64::from(writes));
    let apex = ServiceNames::of(canary).apex;
    let message = format!(
        "Not reverting to {target_name}: {why}. {primary_name} keeps serving: it, its configs, Service {apex} and the route are left in place, no longer owned by the Canary"
    );
    publish(ctx, canary, true, "KeptPrimary", &message).await;
    set_finalizer(ctx, canary, false).await?;
    Ok(Action::await_change())
}

fn owned_copy(meta: &kube::api::ObjectMeta, canary: &Canary) -> bool {
    meta.name
        .as_deref()
        .is_some_and(|n| n.ends_with(PRIMARY_SUFFIX))
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == canary.uid().as_ref())
}

/// Drops the Canary from an object's owners (others stay), so the garbage collector keeps it. `cached` is
/// the watch cache's metadata; the patch carries its resourceVersion, so a stale cache is a conflict.
async fn release(
    ctx: &Context,
    canary: &Canary,
    ar: &ApiResource,
    cached: &kube::api::ObjectMeta,
) -> Result<u32, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &canary.namespace().unwrap_or_default(),
        ar,
    );
    let name = cached.name.clone().unwrap_or_default();
    let uid = canary.uid();
    let owners = cached.owner_references.clone().unwrap_or_default();
    let others: Vec<_> = owners
        .iter()
        .filter(|o| Some(&o.uid) != uid.as_ref())
        .cloned()
        .collect();
    if others.len() == owners.len() {
        return Ok(0);
    }
    let patch = json!({"metadata": {"ownerReferences": others, "resourceVersion": cached.resource_version}});
    api.patch(
        &name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(1)
}

/// The route, sending all traffic to the apex Service and no longer owned by the Canary, so it keeps
/// serving once the Canary (and the `-primary` and `-canary` Services it owns) are gone.
async fn hand_back_route(ctx: &Context, canary: &Canary) -> Result<u32, Error> {
    let provider = canary.spec.provider.unwrap_or(ctx.defaults.provider);
    let Some(router) = router_for(provider).map(|k| k.router()) else {
        return Ok(0);
    };
    let mut writes = 0;
    for route in router.handed_back(canary)? {
        let Some(ar) = router.resource_of(&route) else {
            continue;
        };
        // Forced write: the owner reference must go even when the rest already matches.
        writes += u32::from(apply(&ctx.client, &ar, None, &to_json(&route), false).await?);
    }
    Ok(writes)
}

/// The apex Service on `selector`'s pods (those of `pods`), no longer owned by the Canary. One Serin took
/// over is given back when traffic returns to the target, and left as it is (on the primary) otherwise.
async fn release_apex(
    ctx: &Context,
    canary: &Canary,
    selector: &crate::workload::primary::Labels,
    pods: &Workload,
    to_target: bool,
) -> Result<u32, Error> {
    let ports = ports(canary, pods.template());
    let service_resource = ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());
    let name = ServiceNames::of(canary).apex;
    let existing = ctx
        .services
        .get(&ObjectRef::new(&name).within(&canary.namespace().unwrap_or_default()));
    if let Some(existing) = existing.as_ref().filter(|s| taken_over(s)) {
        if !to_target {
            return Ok(0);
        }
        let want = give_back(existing, selector, &ports);
        return Ok(u32::from(
            apply(&ctx.client, &service_resource, None, &want, true).await?,
        ));
    }
    let mut apex = services(canary, selector, selector, &ports).remove(0);
    apex.metadata.owner_references = None;
    let cached: Option<Value> = existing.map(|s| to_json(&*s));
    let still_owned = cached.as_ref().is_some_and(|c| {
        c["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|o| !o.is_empty())
    });
    let cached = if still_owned { None } else { cached };
    Ok(u32::from(
        apply(
            &ctx.client,
            &service_resource,
            cached,
            &to_json(&apex),
            false,
        )
        .await?,
    ))
}
