//! Acting on a decision: bring the objects to the desired state (writing only what differs from the watch
//! cache), and never take over an object Serin does not own.

use super::mapping::canary_ref;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::Value;

use super::apply::{FIELD_MANAGER, apply, apply_answered, conflict_message, to_json};
use super::observe::Observation;
use super::own_writes::Written;
use super::reconcile::publish;
use super::{Context, Error};
use crate::api::Canary;
use crate::api::canary::AutoscalerKind;
use crate::decision::{Desired, Scale};
use crate::routing::ServiceNames;
use crate::routing::services::{
    can_take_over, governing_copy, ports, services, take_over, taken_over,
};
use crate::workload::Workload;
use crate::workload::primary::{PrimaryParams, primary_object, primary_service_name};
use crate::workload::scale::{ScaleTo, is_at, scale_apply};
use crate::workload::scaler::{self as scalers, ScalerParams, primary_scaler};

fn owned_by(meta: &kube::api::ObjectMeta, canary: &Canary) -> bool {
    let uid = canary.uid();
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == uid.as_ref())
}

fn conflict(kind: &str, name: &str, canary: &Canary) -> Error {
    Error::NotOwned(format!(
        "{kind} {name} exists and is not owned by Canary {}: rename or remove it",
        canary.name_any()
    ))
}

/// Brings the cluster to `desired`. Returns the number of writes made.
pub async fn act(
    ctx: &Context,
    canary: &Canary,
    obs: &Observation,
    desired: &Desired,
) -> Result<u32, Error> {
    let mut writes = 0u32;
    let owner = canary
        .controller_owner_ref(&())
        .ok_or_else(|| Error::NotOwned("the Canary has no uid yet".into()))?;
    let kind = obs.target.kind();
    let workloads = kind.resource();
    let target_name = obs.target.name();
    let revision = &obs.observed.target.revision;
    let apex_name = ServiceNames::of(canary).apex;

    if let Some(p) = &obs.primary
        && !owned_by(p.meta(), canary)
    {
        return Err(conflict(kind.as_str(), &p.name(), canary));
    }
    let params = |replicas: i32| PrimaryParams {
        owner: owner.clone(),
        revision,
        replicas,
        include: &ctx.include_label_prefix,
        apex: &apex_name,
    };
    if let Some(wanted) = &desired.create_primary
        && obs.primary.is_none()
        && wanted == revision
    {
        writes += copy_configs(ctx, obs).await?;
        let replicas = obs.target.replicas().filter(|r| *r > 0).unwrap_or(1);
        let primary = primary_object(&obs.target, &params(replicas))?;
        writes += u32::from(apply(&ctx.client, &workloads, None, &primary, false).await?);
    }
    let autoscaled = canary.spec.autoscaler_ref.is_some();
    if desired.primary_configs {
        // Copies that went missing come back; those that exist already hold the same data (the target
        // runs the primary's revision), so this writes nothing otherwise.
        writes += copy_configs(ctx, obs).await?;
    }

    if desired.bootstrap {
        let service_resource = ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());
        let ports = ports(canary, obs.target.template());
        for svc in services(canary, &obs.target_selector, &obs.primary_selector, &ports) {
            if svc.name_any() == apex_name && !desired.apex {
                continue;
            }
            let cached = ctx
                .services
                .get(&ObjectRef::new(&svc.name_any()).within(&svc.namespace().unwrap_or_default()));
            if let Some(c) = &cached
                && !owned_by(&c.metadata, canary)
            {
                if svc.name_any() != apex_name || !can_take_over(c) {
                    return Err(conflict("Service", &svc.name_any(), canary));
                }
                // The user's own apex Service: taken over, as Flagger does.
                let first = !taken_over(c);
                let want = take_over(c, &obs.primary_selector, &ports);
                let wrote = write(
                    apply(
                        &ctx.client,
                        &service_resource,
                        Some(to_json(&**c)),
                        &want,
                        true,
                    )
                    .await,
                )?;
                writes += u32::from(wrote);
                if wrote && first {
                    let message = format!(
                        "Service {apex_name} existed: it now selects the primary's pods, and Flux and Helm leave it alone while the Canary runs (its selector was recorded, to be given back with revertOnDeletion)"
                    );
                    publish(ctx, canary, false, "ServiceTakenOver", &message).await;
                }
                continue;
            }
            writes += u32::from(write(
                apply(
                    &ctx.client,
                    &service_resource,
                    cached.map(|c| to_json(&*c)),
                    &to_json(&svc),
                    false,
                )
                .await,
            )?);
        }
        writes += governing_service(ctx, canary, obs, &apex_name).await?;
    }

    let key = canary_ref(canary);
    if let Some(promoted) = &desired.promote_primary
        && promoted == revision
        && obs
            .primary
            .as_ref()
            .is_none_or(|p| ctx.own_writes.seen(&key, Written::Primary, p.meta()))
    {
        // Replicas stay what they are: Serin owns the field, and an apply without it would drop it.
        let replicas = obs
            .primary
            .as_ref()
            .and_then(Workload::replicas)
            .unwrap_or(1);
        let primary = primary_object(&obs.target, &params(replicas))?;
        writes += copy_configs(ctx, obs).await?;
        let cached = obs.primary.as_ref().map(Workload::to_json);
        // With an autoscaler the primary's replicas are its autoscaler's: forced, so a value it set after
        // the cache was read is a moment's correction, not a refused promotion.
        let answer =
            write(apply_answered(&ctx.client, &workloads, cached, &primary, autoscaled).await)?;
        if let Some(answer) = answer {
            ctx.own_writes
                .wrote(&key, Written::Primary, &answer.metadata);
            writes += 1;
        }
    }

    // Traffic moves before pods do: the route leaves the canary first, and its pods go only once the
    // route, read back, sends them nothing (the decision waits for that).
    if let (Some(traffic), Some(router)) = (desired.traffic, obs.router) {
        for (i, mut route) in router
            .desired_from(canary, traffic, &obs.routes)?
            .into_iter()
            .enumerate()
        {
            let Some(ar) = router.resource_of(&route) else {
                continue;
            };
            stamp_spec_hash(&mut route);
            let cached = obs
                .routes
                .iter()
                .find(|(a, r)| a.kind == ar.kind && r.name_any() == route.name_any())
                .map(|(_, r)| r);
            // The object carrying the split is written whenever it reads back as other traffic, even
            // when it holds every field wanted: a field Serin stops setting (the mirror, once mirroring
            // ends) is only dropped by a write.
            let other_traffic =
                i == 0 && cached.is_some_and(|c| router.traffic(canary, c) != Some(traffic));
            if let Some(c) = cached
                && !owned_by(&c.metadata, canary)
            {
                return Err(conflict(&ar.kind, &route.name_any(), canary));
            }
            writes += u32::from(write(
                apply(
                    &ctx.client,
                    &ar,
                    cached.filter(|_| !other_traffic).map(|c| to_json(&**c)),
                    &to_json(&route),
                    false,
                )
                .await,
            )?);
        }
    }
    if desired.bootstrap
        && (obs.primary.is_some() || desired.create_primary.is_some())
        && let (Some(reference), Some(scaler)) = (&canary.spec.autoscaler_ref, &obs.scaler)
    {
        let want = primary_scaler(
            scaler,
            &ScalerParams {
                reference,
                owner: owner.clone(),
                target: &target_name,
                include: &ctx.include_label_prefix,
            },
        )?;
        let ar = scalers::resource(scalers::kind_of(reference));
        if let Some(c) = &obs.primary_scaler
            && !owned_by(&c.metadata, canary)
        {
            return Err(conflict(&ar.kind, &c.name_any(), canary));
        }
        let cached = obs.primary_scaler.as_ref().map(|c| to_json(&**c));
        writes += u32::from(write(apply(&ctx.client, &ar, cached, &want, false).await)?);
    }

    let scale = match desired.canary_scale {
        Scale::Keep => None,
        Scale::Zero => Some(ScaleTo::Zero),
        // With an autoscaler, the canary starts at its minimum and is the autoscaler's from then on.
        Scale::Up if let (Some(r), Some(s)) = (&canary.spec.autoscaler_ref, &obs.scaler) => Some(
            ScaleTo::Started(scalers::starting_replicas(scalers::kind_of(r), s)),
        ),
        // The canary runs as many replicas as the primary.
        Scale::Up => Some(ScaleTo::Running(
            obs.primary
                .as_ref()
                .and_then(Workload::replicas)
                .filter(|r| *r > 0)
                .unwrap_or(1),
        )),
    };
    // A ScaledObject would start the canary from zero by itself: paused while it should stay there.
    if let (Some(to), Some(r), Some(so)) = (scale, &canary.spec.autoscaler_ref, &obs.scaler)
        && scalers::kind_of(r) == AutoscalerKind::ScaledObject
        && let Some(want) = scalers::pause_change(so, to == ScaleTo::Zero, FIELD_MANAGER)
    {
        let ar = scalers::resource(AutoscalerKind::ScaledObject);
        writes += u32::from(apply(&ctx.client, &ar, None, &want, true).await?);
    }
    // The target's generation after this replica's last scale of it: a cache still on an older one has
    // not seen that write (a status update of the target, ordered before it, triggered this reconcile).
    let seen_own_scale = ctx
        .own_writes
        .seen(&key, Written::TargetScale, obs.target.meta());
    if let Some(to) = scale
        && !is_at(&obs.target, to)
        && seen_own_scale
    {
        let want = scale_apply(kind, &obs.target.namespace(), &target_name, to);
        // Forced: Serin must drive the target's scale for canaries to run (as Flagger does).
        let answer = Api::<DynamicObject>::namespaced_with(
            ctx.client.clone(),
            &obs.target.namespace(),
            &workloads,
        )
        .patch(
            &target_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&want),
        )
        .await?;
        ctx.own_writes
            .wrote(&key, Written::TargetScale, &answer.metadata);
        writes += 1;
    }

    Ok(writes)
}

/// The annotation holding a hash of the spec Serin last applied to a routing object.
pub const SPEC_HASH_ANNOTATION: &str = "serin.dev/spec-hash";

/// Stamps the route with a hash of its spec. A route is written when the cache lacks a wanted field; a
/// field Serin stops setting (a `retries` taken out of the Canary) is only dropped by a write, and inside a
/// list it can't be told from the API server's defaults: the hash changes with it, so the write comes.
fn stamp_spec_hash(route: &mut DynamicObject) {
    use sha2::{Digest, Sha256};
    // serde_json's maps are ordered by key: the same spec always serializes the same.
    let digest = Sha256::digest(route.data.to_string().as_bytes());
    let hash = digest.iter().take(8).fold(String::new(), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    });
    route
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(SPEC_HASH_ANNOTATION.into(), hash);
}

/// A StatefulSet target's governing Service, copied for the primary as `<serviceName>-primary` (unless it
/// is the apex, which selects the primary already). Made only when the target's exists.
async fn governing_service(
    ctx: &Context,
    canary: &Canary,
    obs: &Observation,
    apex: &str,
) -> Result<u32, Error> {
    let Workload::StatefulSet(sts) = &obs.target else {
        return Ok(0);
    };
    let governing = sts
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .unwrap_or_default();
    let Some(name) = primary_service_name(&governing, apex).filter(|n| n != apex) else {
        return Ok(0);
    };
    let ns = obs.target.namespace();
    let Some(source) = ctx.services.get(&ObjectRef::new(&governing).within(&ns)) else {
        return Ok(0);
    };
    let cached = ctx.services.get(&ObjectRef::new(&name).within(&ns));
    if let Some(c) = &cached
        && !owned_by(&c.metadata, canary)
    {
        return Err(conflict("Service", &name, canary));
    }
    let want = governing_copy(canary, &source, &name, &obs.primary_selector);
    let ar = ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());
    Ok(u32::from(write(
        apply(&ctx.client, &ar, cached.map(|c| to_json(&*c)), &want, false).await,
    )?))
}

async fn copy_configs(ctx: &Context, obs: &Observation) -> Result<u32, Error> {
    let mut writes = 0;
    for copy in &obs.config_copies {
        let kind = copy["kind"].as_str().unwrap_or_default();
        let ar = if kind == "Secret" {
            ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&())
        } else {
            ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&())
        };
        let name = copy["metadata"]["name"].as_str().unwrap_or_default();
        let ns = copy["metadata"]["namespace"].as_str().unwrap_or_default();
        let cached: Option<Value> = if kind == "Secret" {
            ctx.secrets
                .get(&ObjectRef::new(name).within(ns))
                .map(|s| to_json(&*s))
        } else {
            ctx.config_maps
                .get(&ObjectRef::new(name).within(ns))
                .map(|c| to_json(&*c))
        };
        writes += u32::from(write(apply(&ctx.client, &ar, cached, copy, false).await)?);
    }
    Ok(writes)
}

/// A write refused because another field manager owns the field is reported, not retried in a loop.
fn write<T>(result: Result<T, kube::Error>) -> Result<T, Error> {
    result.map_err(|e| match conflict_message(&e) {
        Some(message) => Error::FieldConflict(message),
        None => Error::Kube(e),
    })
}
