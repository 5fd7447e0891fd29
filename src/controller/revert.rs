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
//!   collector keeps them), and a Warning event says so.
//!
//! Either way the finalizer goes within progressDeadlineSeconds of the deletion.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::apply::{FIELD_MANAGER, apply, to_json};
use super::observe::observe;
use super::reconcile::publish;
use super::{Context, Error};
use crate::api::Canary;
use crate::decision::{Readiness, Settings};
use crate::routing::services::services;
use crate::routing::{ServiceNames, router_for};
use crate::workload::PRIMARY_SUFFIX;
use crate::workload::primary::{primary_name, selectors};
use crate::workload::readiness::readiness;

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
    let Some(target) = ctx
        .deployments
        .get(&ObjectRef::new(target_name).within(&ns))
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
    let plan = match observe(ctx, canary) {
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
        Revert::ToTarget => to_target(ctx, canary, &target).await,
        Revert::KeepPrimary(why) => keep_primary(ctx, canary, &why).await,
    }
}

async fn to_target(ctx: &Context, canary: &Canary, target: &Deployment) -> Result<Action, Error> {
    let ns = canary.namespace().unwrap_or_default();
    let target_name = target.name_any();
    let primary = ctx
        .deployments
        .get(&ObjectRef::new(&primary_name(&target_name)).within(&ns));
    let replicas = primary
        .and_then(|p| p.spec.as_ref().and_then(|s| s.replicas))
        .filter(|r| *r > 0)
        .unwrap_or(1);
    let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": target_name, "namespace": ns},
        "spec": {"replicas": replicas}});
    // Sent every time and judged from the answer, not the cache: a cache that has not yet seen the scale
    // to zero of the last tick would show the target ready while its pods are going.
    let stored = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .patch(
            &target_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&scale),
        )
        .await?;
    let mut writes = 1;
    let ready = stored.spec.as_ref().and_then(|s| s.replicas) == Some(replicas)
        && readiness(&stored, 100) == Readiness::Ready;
    if !ready {
        // Traffic stays on the primary until the target's pods serve.
        ctx.metrics.api_writes.inc_by(u64::from(writes));
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    writes += hand_back_route(ctx, canary).await?;
    let (target_selector, _) = selectors(target)?;
    writes += release_apex(ctx, canary, &target_selector).await?;
    ctx.metrics.api_writes.inc_by(u64::from(writes));
    let apex = ServiceNames::of(canary).apex;
    let message = format!(
        "{target_name} runs {replicas} replicas again and Service {apex} selects it; the route sends all traffic to {apex}"
    );
    publish(ctx, canary, false, "Reverted", &message).await;
    set_finalizer(ctx, canary, false).await?;
    Ok(Action::await_change())
}

async fn keep_primary(ctx: &Context, canary: &Canary, why: &str) -> Result<Action, Error> {
    let ns = canary.namespace().unwrap_or_default();
    let target_name = &canary.spec.target_ref.name;
    let primary_name = primary_name(target_name);
    let mut writes = hand_back_route(ctx, canary).await?;
    let primary = ctx
        .deployments
        .get(&ObjectRef::new(&primary_name).within(&ns));
    if let Some(primary) = &primary {
        let (primary_selector, _) = selectors(primary)?;
        // The primary's own labels are its selector already; the apex Service keeps selecting them.
        writes += release_apex(ctx, canary, &primary_selector).await?;
        writes += release::<Deployment>(ctx, canary, &primary.metadata).await?;
        // Its configs, or its pods could not start again once the collector took them.
        for cm in ctx.config_maps.state() {
            if owned_copy(&cm.metadata, canary) {
                writes +=
                    release::<k8s_openapi::api::core::v1::ConfigMap>(ctx, canary, &cm.metadata)
                        .await?;
            }
        }
        for s in ctx.secrets.state() {
            if owned_copy(&s.metadata, canary) {
                writes +=
                    release::<k8s_openapi::api::core::v1::Secret>(ctx, canary, &s.metadata).await?;
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
async fn release<K>(
    ctx: &Context,
    canary: &Canary,
    cached: &kube::api::ObjectMeta,
) -> Result<u32, Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
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
    let Some(ar) = router.resource() else {
        return Ok(0);
    };
    let mut writes = 0;
    for route in router.handed_back(canary)? {
        // Forced write: the owner reference must go even when the rest already matches.
        writes += u32::from(apply(&ctx.client, &ar, None, &to_json(&route), false).await?);
    }
    Ok(writes)
}

/// The apex Service on `selector`'s pods, no longer owned by the Canary.
async fn release_apex(
    ctx: &Context,
    canary: &Canary,
    selector: &crate::workload::primary::Labels,
) -> Result<u32, Error> {
    let mut apex = services(canary, selector, selector).remove(0);
    apex.metadata.owner_references = None;
    let service_resource = ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());
    let cached: Option<Value> = ctx
        .services
        .get(&ObjectRef::new(&apex.name_any()).within(&canary.namespace().unwrap_or_default()))
        .map(|s| to_json(&*s));
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
