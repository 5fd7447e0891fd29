//! revertOnDeletion: a finalizer that, when the Canary is deleted, gives the target back its replicas and
//! points the apex Service at the target's pods (releasing it from the Canary, so garbage collection keeps
//! it), then lets the Canary go. Without the field, no finalizer is added.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ApiResource, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::apply::{apply, to_json};
use super::{Context, Error, publish};
use crate::api::Canary;
use crate::decision::Readiness;
use crate::routing::services::services;
use crate::workload::primary::{primary_name, selectors};
use crate::workload::readiness::readiness;

pub const FINALIZER: &str = "serin.dev/revert-on-deletion";

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

/// One step of reverting a deleted Canary; the finalizer goes once the target is ready again.
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
    let primary = ctx
        .deployments
        .get(&ObjectRef::new(&primary_name(target_name)).within(&ns));
    let replicas = primary
        .and_then(|p| p.spec.as_ref().and_then(|s| s.replicas))
        .filter(|r| *r > 0)
        .unwrap_or(1);
    let deployments = ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&());
    let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": target_name, "namespace": ns},
        "spec": {"replicas": replicas}});
    let mut writes = u32::from(
        apply(
            &ctx.client,
            &deployments,
            Some(to_json(&*target)),
            &scale,
            true,
        )
        .await?,
    );

    let (target_selector, _) = selectors(&target)?;
    // The apex Service, on the target's pods and without the Canary as owner.
    let mut apex = services(canary, &target_selector, &target_selector).remove(0);
    apex.metadata.owner_references = None;
    let service_resource = ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());
    let cached = ctx
        .services
        .get(&ObjectRef::new(&apex.name_any()).within(&ns))
        .map(|s| to_json(&*s));
    let still_owned = cached.as_ref().is_some_and(|c| {
        c["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|o| !o.is_empty())
    });
    let cached = if still_owned { None } else { cached };
    writes += u32::from(
        apply(
            &ctx.client,
            &service_resource,
            cached,
            &to_json(&apex),
            false,
        )
        .await?,
    );
    ctx.metrics.api_writes.inc_by(u64::from(writes));

    match readiness(&target, 100) {
        Readiness::Ready if target.spec.as_ref().and_then(|s| s.replicas) == Some(replicas) => {
            let message = format!(
                "{target_name} runs {replicas} replicas again and Service {} selects it",
                apex.name_any()
            );
            publish(ctx, canary, false, "Reverted", &message).await;
            set_finalizer(ctx, canary, false).await?;
            // The Canary is gone once its finalizer is: no reconcile will see it again.
            ctx.metrics
                .forget_canary(&canary.name_any(), &canary.namespace().unwrap_or_default());
            Ok(Action::await_change())
        }
        _ => Ok(Action::requeue(Duration::from_secs(2))),
    }
}
