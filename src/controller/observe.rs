//! Observing one Canary: everything the decision core needs, read from the watch caches (no API reads).

use super::mapping::canary_ref;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::Context;
use crate::api::Canary;
use crate::decision::settings::Settings;
use crate::decision::{Images, Manual, Observed, Primary, Readiness, Target, WriteBackObserved};
use crate::routing::{Router, ServiceNames, router_for};
use crate::workload::configs::{ConfigKind, ConfigRef, referenced, required};
use crate::workload::primary::{Labels, primary_name, selectors};
use crate::workload::readiness::readiness;
use crate::workload::revision::{checksum, revision};
use crate::workload::scaler;
use crate::workload::{PRIMARY_SUFFIX, REVISION_ANNOTATION, Workload, WorkloadError, WorkloadKind};

/// The annotation whose new value retries a failed revision.
pub const RETRY_ANNOTATION: &str = "serin.dev/retry";
/// A new value promotes the revision under analysis now (one starting with "force": even while checks fail).
pub const PROMOTE_ANNOTATION: &str = "serin.dev/promote";
/// A new value rolls the revision under analysis back now.
pub const ABORT_ANNOTATION: &str = "serin.dev/abort";
/// "true" holds the analysis at its weight; the checks go on.
pub const PAUSE_ANNOTATION: &str = "serin.dev/pause";

pub struct Observation {
    pub observed: Observed,
    /// The spec resolved (None when it is invalid: the decision says why).
    pub settings: Option<Settings>,
    pub target: Workload,
    pub primary: Option<Workload>,
    pub target_selector: Labels,
    pub primary_selector: Labels,
    /// The ConfigMaps and Secrets the target uses, as the objects to apply for the primary's copies.
    pub config_copies: Vec<Value>,
    pub tracked_configs: BTreeMap<String, String>,
    pub router: Option<&'static dyn Router>,
    /// The routing objects Serin writes for the Canary that exist, with their kind.
    pub routes: Vec<(ApiResource, Arc<DynamicObject>)>,
    /// The target's autoscaler (autoscalerRef), and the primary's copy of it if it exists.
    pub scaler: Option<Arc<DynamicObject>>,
    pub primary_scaler: Option<Arc<DynamicObject>>,
}

/// Why a Canary can't be observed yet.
#[derive(Debug, thiserror::Error)]
pub enum Blocked {
    #[error("target {kind} {namespace}/{name} not found")]
    TargetNotFound {
        kind: WorkloadKind,
        namespace: String,
        name: String,
    },
    #[error("spec.targetRef.kind: {kind} is not supported (supported: {supported})", supported = WorkloadKind::ALL.map(WorkloadKind::as_str).join(", "))]
    UnsupportedKind { kind: String },
    #[error("{kind} {namespace}/{name} (spec.autoscalerRef) not found")]
    AutoscalerNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error(transparent)]
    Workload(#[from] WorkloadError),
}

pub fn observe(ctx: &Context, canary: &Canary) -> Result<Observation, Blocked> {
    let ns = canary.namespace().unwrap_or_default();
    let target_name = &canary.spec.target_ref.name;
    let kind =
        WorkloadKind::of(canary.spec.target_ref.kind).ok_or_else(|| Blocked::UnsupportedKind {
            kind: canary
                .spec
                .target_ref
                .kind
                .map(|k| format!("{k:?}"))
                .unwrap_or_default(),
        })?;
    let target =
        ctx.workloads
            .get(kind, &ns, target_name)
            .ok_or_else(|| Blocked::TargetNotFound {
                kind,
                namespace: ns.clone(),
                name: target_name.clone(),
            })?;
    let (target_selector, primary_selector) = selectors(&target)?;
    let template = target.revision_template();
    let (scaler, primary_scaler) = match &canary.spec.autoscaler_ref {
        None => (None, None),
        Some(r) => {
            let kind = scaler::kind_of(r);
            let ar = scaler::resource(kind);
            let get = |name: &str| ctx.dynamic_get(&ar, &ns, name);
            let Some(found) = get(&r.name) else {
                return Err(Blocked::AutoscalerNotFound {
                    kind: scaler::kind_name(kind),
                    namespace: ns.clone(),
                    name: r.name.clone(),
                });
            };
            (Some(found), get(&scaler::primary_scaler_name(&r.name)))
        }
    };
    let owner = canary.controller_owner_ref(&());

    let mut tracked_configs = BTreeMap::new();
    let mut config_copies = Vec::new();
    let mut missing_configs = Vec::new();
    let needed = template.spec.as_ref().map(required).unwrap_or_default();
    for r in template.spec.as_ref().map(referenced).unwrap_or_default() {
        match config_of(ctx, &ns, &r, &owner) {
            Some((sum, copy)) => {
                tracked_configs.insert(r.key(), sum);
                config_copies.push(copy);
            }
            // An optional config that is absent is part of the revision as absent; a required one makes
            // the revision unknown (the decision holds), never silently a different one.
            None if needed.contains(&r) => {
                let kind = match r.kind {
                    ConfigKind::ConfigMap => "ConfigMap",
                    ConfigKind::Secret => "Secret",
                };
                missing_configs.push(format!("{kind} {ns}/{}", r.name));
            }
            None => {}
        }
    }
    let revision = revision(&template, &tracked_configs);

    let defaults = &ctx.defaults;
    let settings = Settings::resolve(&canary.spec, defaults).ok();
    let canary_threshold = settings.as_ref().map_or(100, |s| s.canary_ready_threshold);
    let primary_threshold = settings.as_ref().map_or(100, |s| s.primary_ready_threshold);

    let primary = ctx.workloads.get(kind, &ns, &primary_name(target_name));
    let primary_state = match &primary {
        None => Primary {
            revision: None,
            ready: Readiness::NotReady("not created yet".into()),
        },
        Some(p) => Primary {
            revision: Some(
                p.annotation(REVISION_ANNOTATION)
                    .cloned()
                    .unwrap_or_default(),
            ),
            ready: readiness(p, primary_threshold),
        },
    };

    let router = router_for(canary.spec.provider.unwrap_or(defaults.provider)).map(|k| k.router());
    // The routing objects Serin writes for this Canary, as the caches hold them; the first carries the split.
    let wanted = router.map(|r| r.objects(canary)).unwrap_or_default();
    let routes: Vec<(ApiResource, Arc<DynamicObject>)> = wanted
        .iter()
        .filter_map(|(ar, name)| {
            let object = ctx.dynamic_get(ar, &ns, name)?;
            Some((ar.clone(), object))
        })
        .collect();
    let routed = router.and_then(|r| {
        let (carrier, name) = wanted.first()?;
        routes
            .iter()
            .find(|(ar, o)| ar.kind == carrier.kind && o.name_any() == *name)
            .and_then(|(_, route)| r.traffic(canary, route))
    });

    let apex = ServiceNames::of(canary).apex;
    let apex_to_primary = ctx
        .services
        .get(&ObjectRef::new(&apex).within(&ns))
        .and_then(|svc| svc.spec.as_ref()?.selector.clone())
        .is_some_and(|selector| selector == primary_selector);

    let images = Images {
        target: images_of(&template),
        primary: primary
            .as_ref()
            .and_then(|p| p.template().map(images_of))
            .unwrap_or_default(),
    };
    let write_back = WriteBackObserved {
        enabled: canary.spec.write_back.is_some() || ctx.writers.default_on(),
        report: ctx.writers.report(&canary_ref(canary)),
    };
    let observed = Observed {
        now: Timestamp::now(),
        generation: canary.metadata.generation.unwrap_or(0),
        spec: canary.spec.clone(),
        status: canary.status.clone().unwrap_or_default(),
        defaults: defaults.clone(),
        target: Target {
            revision,
            ready: readiness(&target, canary_threshold),
            missing_configs,
        },
        primary: primary_state,
        routed,
        apex_to_primary,
        checks: None,
        hooks: BTreeMap::new(),
        retry: canary.annotations().get(RETRY_ANNOTATION).cloned(),
        manual: Manual {
            promote: canary.annotations().get(PROMOTE_ANNOTATION).cloned(),
            abort: canary.annotations().get(ABORT_ANNOTATION).cloned(),
            pause: canary
                .annotations()
                .get(PAUSE_ANNOTATION)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        },
        images,
        write_back,
    };
    Ok(Observation {
        observed,
        settings,
        target,
        primary,
        target_selector,
        primary_selector,
        config_copies,
        tracked_configs,
        router,
        routes,
        scaler,
        primary_scaler,
    })
}

/// Each container's image, init containers first.
pub fn images_of(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Vec<(String, String)> {
    let Some(spec) = &template.spec else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
        .collect()
}

/// A config's checksum, and its `-primary` copy as Serin applies it.
fn config_of(
    ctx: &Context,
    ns: &str,
    r: &ConfigRef,
    owner: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> Option<(String, Value)> {
    let meta = |name: &str| json!({"name": format!("{name}{PRIMARY_SUFFIX}"), "namespace": ns, "ownerReferences": owner.iter().collect::<Vec<_>>()});
    match r.kind {
        ConfigKind::ConfigMap => {
            let cm = ctx.config_maps.get(&ObjectRef::new(&r.name).within(ns))?;
            let mut data: BTreeMap<String, Value> = BTreeMap::new();
            for (k, v) in cm.data.iter().flatten() {
                data.insert(k.clone(), json!(v));
            }
            for (k, v) in cm.binary_data.iter().flatten() {
                data.insert(
                    format!("binary:{k}"),
                    serde_json::to_value(v).unwrap_or(Value::Null),
                );
            }
            let copy = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(&r.name), "data": cm.data, "binaryData": cm.binary_data});
            Some((checksum(&data), strip_nulls(copy)))
        }
        ConfigKind::Secret => {
            let secret = ctx.secrets.get(&ObjectRef::new(&r.name).within(ns))?;
            let data: BTreeMap<String, Value> = secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
                .collect();
            let copy = json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(&r.name), "type": secret.type_, "data": secret.data});
            Some((checksum(&data), strip_nulls(copy)))
        }
    }
}

fn strip_nulls(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    v
}
