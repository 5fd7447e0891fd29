//! autoscalerRef: the target's HorizontalPodAutoscaler (autoscaling/v2) or KEDA ScaledObject
//! (keda.sh/v1alpha1), copied as `<name>-primary` for the primary, as Flagger does.
//!
//! The copy scales the primary with the target's bounds, metrics and behaviour (`primaryScalerReplicas`
//! overrides the bounds; for KEDA, `primaryScalerQueries` the triggers' queries, by trigger name, else each
//! query has the target's name replaced by the primary's). The target's own autoscaler keeps scaling the
//! canary: Serin only starts the canary from zero (at the autoscaler's minimum) and puts it back to zero,
//! never sets its replicas while it runs. A KEDA ScaledObject would scale the target up from zero by itself,
//! so while the canary is at zero it is paused (`autoscaling.keda.sh/paused-replicas: "0"`, the one field
//! of it Serin owns).

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};

use super::PRIMARY_SUFFIX;
use super::metadata::IncludePrefixes;
use crate::api::canary::{AutoscalerKind, AutoscalerRef};

/// KEDA's annotation that holds a ScaledObject's target at this many replicas.
pub const KEDA_PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";
/// KEDA's pause annotations: never copied to the primary's ScaledObject (it would never scale).
const KEDA_PAUSE_KEYS: [&str; 2] = [KEDA_PAUSED_REPLICAS, "autoscaling.keda.sh/paused"];

pub fn kind_of(r: &AutoscalerRef) -> AutoscalerKind {
    r.kind.unwrap_or(AutoscalerKind::HorizontalPodAutoscaler)
}

pub fn kind_name(kind: AutoscalerKind) -> &'static str {
    match kind {
        AutoscalerKind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
        AutoscalerKind::ScaledObject => "ScaledObject",
    }
}

pub fn resource(kind: AutoscalerKind) -> ApiResource {
    match kind {
        AutoscalerKind::HorizontalPodAutoscaler => {
            ApiResource::erase::<HorizontalPodAutoscaler>(&())
        }
        AutoscalerKind::ScaledObject => ApiResource {
            group: "keda.sh".into(),
            version: "v1alpha1".into(),
            api_version: "keda.sh/v1alpha1".into(),
            kind: "ScaledObject".into(),
            plural: "scaledobjects".into(),
        },
    }
}

pub fn primary_scaler_name(name: &str) -> String {
    format!("{name}{PRIMARY_SUFFIX}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScalerError {
    #[error(
        "{kind} {namespace}/{name} (spec.autoscalerRef) scales {scales:?}, not the target {target}: point its scaleTargetRef at the target"
    )]
    WrongTarget {
        kind: &'static str,
        namespace: String,
        name: String,
        scales: String,
        target: String,
    },
}

/// What Serin writes into the primary's autoscaler besides the target's.
pub struct ScalerParams<'a> {
    pub reference: &'a AutoscalerRef,
    pub owner: OwnerReference,
    /// The target workload's name (the primary's is this suffixed `-primary`).
    pub target: &'a str,
    pub include: &'a IncludePrefixes,
}

/// The primary's autoscaler, as Serin applies it, from the target's as the cache holds it.
pub fn primary_scaler(
    target_scaler: &DynamicObject,
    p: &ScalerParams,
) -> Result<Value, ScalerError> {
    let kind = kind_of(p.reference);
    let namespace = target_scaler.metadata.namespace.clone().unwrap_or_default();
    let spec = target_scaler
        .data
        .get("spec")
        .cloned()
        .unwrap_or(Value::Null);
    let scales = spec["scaleTargetRef"]["name"].as_str().unwrap_or_default();
    if scales != p.target {
        return Err(ScalerError::WrongTarget {
            kind: kind_name(kind),
            namespace,
            name: p.reference.name.clone(),
            scales: scales.to_string(),
            target: p.target.to_string(),
        });
    }
    let primary = format!("{}{PRIMARY_SUFFIX}", p.target);
    let bounds = p
        .reference
        .primary_scaler_replicas
        .clone()
        .unwrap_or_default();
    let mut target_ref = json!({"name": primary});
    for key in ["kind", "apiVersion", "envSourceContainerName"] {
        if let Some(v) = spec["scaleTargetRef"].get(key) {
            target_ref[key] = v.clone();
        }
    }
    let mut out = serde_json::Map::new();
    out.insert("scaleTargetRef".into(), target_ref);
    let copied: &[&str] = match kind {
        AutoscalerKind::HorizontalPodAutoscaler => {
            &["minReplicas", "maxReplicas", "metrics", "behavior"]
        }
        AutoscalerKind::ScaledObject => &[
            "pollingInterval",
            "cooldownPeriod",
            "minReplicaCount",
            "maxReplicaCount",
            "advanced",
            "triggers",
            "fallback",
            "idleReplicaCount",
        ],
    };
    for key in copied {
        if let Some(v) = spec.get(*key).filter(|v| !v.is_null()) {
            out.insert((*key).into(), v.clone());
        }
    }
    let (min_key, max_key) = replica_keys(kind);
    if let Some(min) = bounds.min_replicas {
        out.insert(min_key.into(), json!(min));
    }
    if let Some(max) = bounds.max_replicas {
        out.insert(max_key.into(), json!(max));
    }
    if kind == AutoscalerKind::ScaledObject {
        // KEDA makes an HPA for each ScaledObject; a named one must not be the target's.
        if let Some(name) = out
            .get_mut("advanced")
            .and_then(|a| a.get_mut("horizontalPodAutoscalerConfig"))
            .and_then(|h| h.get_mut("name"))
            .filter(|n| n.as_str().is_some_and(|s| !s.is_empty()))
        {
            *name = json!(format!(
                "{}{PRIMARY_SUFFIX}",
                name.as_str().unwrap_or_default()
            ));
        }
        if let Some(triggers) = out.get_mut("triggers").and_then(Value::as_array_mut) {
            for t in triggers {
                primary_query(t, p);
            }
        }
    }
    let resource = resource(kind);
    let strip = |m: Option<&BTreeMap<String, String>>| -> BTreeMap<String, String> {
        let mut copied = p.include.copied(m);
        copied.retain(|k, _| !KEDA_PAUSE_KEYS.contains(&k.as_str()));
        copied
    };
    let mut object = json!({"apiVersion": resource.api_version, "kind": resource.kind,
        "metadata": {"name": primary_scaler_name(&p.reference.name), "namespace": namespace,
            "ownerReferences": [p.owner]},
        "spec": Value::Object(out)});
    // Empty maps are left out: the API server stores none, and the cache would never match.
    for (key, map) in [
        ("labels", strip(target_scaler.metadata.labels.as_ref())),
        (
            "annotations",
            strip(target_scaler.metadata.annotations.as_ref()),
        ),
    ] {
        if !map.is_empty() {
            object["metadata"][key] = json!(map);
        }
    }
    Ok(object)
}

/// A KEDA trigger's query, for the primary.
fn primary_query(trigger: &mut Value, p: &ScalerParams) {
    let name = trigger["name"].as_str().unwrap_or_default().to_string();
    let Some(query) = trigger.get_mut("metadata").and_then(|m| m.get_mut("query")) else {
        return;
    };
    if let Some(queries) = &p.reference.primary_scaler_queries {
        if let Some(q) = queries.get(&name) {
            *query = json!(q);
        }
        return;
    }
    let Some(text) = query.as_str() else { return };
    // `<target>-canary`, `<target>-primary` and `<target>` all become `<target>-primary`, never
    // `<target>-primary-primary`.
    let t = p.target;
    let (canary, primary, mark) = (
        format!("{t}-canary"),
        format!("{t}{PRIMARY_SUFFIX}"),
        "\u{1}",
    );
    let replaced = text
        .replace(&primary, mark)
        .replace(&canary, mark)
        .replace(t, mark)
        .replace(mark, &primary);
    *query = json!(replaced);
}

/// The spec fields of an autoscaler's replica bounds: minimum, maximum.
fn replica_keys(kind: AutoscalerKind) -> (&'static str, &'static str) {
    match kind {
        AutoscalerKind::HorizontalPodAutoscaler => ("minReplicas", "maxReplicas"),
        AutoscalerKind::ScaledObject => ("minReplicaCount", "maxReplicaCount"),
    }
}

/// The replicas a canary starts at from zero: the autoscaler's minimum, at least 1 (as Flagger).
pub fn starting_replicas(kind: AutoscalerKind, target_scaler: &DynamicObject) -> i32 {
    target_scaler.data["spec"][replica_keys(kind).0]
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(1)
        .max(1)
}

/// The apply that puts a ScaledObject's pause in line with its canary: paused while the canary is at zero
/// (`paused`), not while it runs. None when it already is. Serin pauses one that is not paused at zero,
/// and takes off only a pause its field manager `manager` holds (a pause of the user's own stays, and
/// Serin does not try again and again).
pub fn pause_change(scaled_object: &DynamicObject, paused: bool, manager: &str) -> Option<Value> {
    let needed = if paused {
        !is_paused(scaled_object)
    } else {
        paused_by(scaled_object, manager)
    };
    needed.then(|| {
        pause_apply(
            &scaled_object.metadata.namespace.clone().unwrap_or_default(),
            &scaled_object.metadata.name.clone().unwrap_or_default(),
            paused,
        )
    })
}

/// Whether a ScaledObject is paused at zero.
fn is_paused(scaled_object: &DynamicObject) -> bool {
    scaled_object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(KEDA_PAUSED_REPLICAS))
        .is_some_and(|v| v == "0")
}

/// Whether `manager` (Serin's field manager) holds the pause annotation: only then does an apply without
/// it take it off.
fn paused_by(scaled_object: &DynamicObject, manager: &str) -> bool {
    let key = format!("f:{KEDA_PAUSED_REPLICAS}");
    scaled_object
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| {
            m.manager.as_deref() == Some(manager)
                && m.fields_v1
                    .as_ref()
                    .and_then(|f| f.0.get("f:metadata")?.get("f:annotations")?.get(&key))
                    .is_some()
        })
}

/// The apply that pauses a ScaledObject at zero, or (`paused` false) takes Serin's pause off it.
fn pause_apply(namespace: &str, name: &str, paused: bool) -> Value {
    let r = resource(AutoscalerKind::ScaledObject);
    let mut object = json!({"apiVersion": r.api_version, "kind": r.kind,
        "metadata": {"name": name, "namespace": namespace}});
    if paused {
        object["metadata"]["annotations"] = json!({KEDA_PAUSED_REPLICAS: "0"});
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerReference {
        serde_json::from_value(
            json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "name": "podinfo",
            "uid": "u", "controller": true, "blockOwnerDeletion": true}),
        )
        .unwrap()
    }

    fn params<'a>(reference: &'a AutoscalerRef, include: &'a IncludePrefixes) -> ScalerParams<'a> {
        ScalerParams {
            reference,
            owner: owner(),
            target: "podinfo",
            include,
        }
    }

    fn object(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    fn hpa() -> DynamicObject {
        object(
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "podinfo", "namespace": "shop", "labels": {"team": "web", "kustomize.toolkit.fluxcd.io/name": "x"}},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "minReplicas": 2, "maxReplicas": 4,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 2}}),
        )
    }

    #[test]
    fn the_primary_hpa_golden() {
        let reference = AutoscalerRef {
            name: "podinfo".into(),
            primary_scaler_replicas: Some(crate::api::canary::ScalerReplicas {
                min_replicas: Some(3),
                max_replicas: None,
            }),
            ..AutoscalerRef::default()
        };
        let include = IncludePrefixes::all();
        let p = params(&reference, &include);
        assert_eq!(
            primary_scaler(&hpa(), &p).unwrap(),
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "podinfo-primary", "namespace": "shop", "labels": {"team": "web"},
                    "ownerReferences": [{"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "name": "podinfo", "uid": "u",
                        "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo-primary"},
                    "minReplicas": 3, "maxReplicas": 4,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}})
        );
        assert_eq!(
            starting_replicas(AutoscalerKind::HorizontalPodAutoscaler, &hpa()),
            2
        );
    }

    #[test]
    fn the_primary_scaled_object_golden() {
        let so = object(
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "podinfo-so", "namespace": "shop",
                "annotations": {"autoscaling.keda.sh/paused-replicas": "0", "team.example.com/owner": "web"}},
            "spec": {"scaleTargetRef": {"name": "podinfo"}, "minReplicaCount": 1, "maxReplicaCount": 5,
                "pollingInterval": 10, "cooldownPeriod": 30,
                "advanced": {"horizontalPodAutoscalerConfig": {"name": "podinfo-hpa"}},
                "triggers": [
                    {"name": "rps", "type": "prometheus", "metadata": {"serverAddress": "http://prom:9090",
                        "query": r#"sum(rate(http_requests_total{deployment="podinfo-canary"}[1m])) + sum(rate(x{app="podinfo"}[1m]))"#}},
                    {"name": "named", "type": "prometheus", "metadata": {"query": "old"}}]}}),
        );
        let include = IncludePrefixes::all();
        let plain = AutoscalerRef {
            kind: Some(AutoscalerKind::ScaledObject),
            name: "podinfo-so".into(),
            ..AutoscalerRef::default()
        };
        let p = params(&plain, &include);
        let got = primary_scaler(&so, &p).unwrap();
        assert_eq!(got["metadata"]["name"], "podinfo-so-primary");
        assert_eq!(
            got["metadata"]["annotations"],
            json!({"team.example.com/owner": "web"})
        );
        assert_eq!(
            got["spec"],
            json!({"scaleTargetRef": {"name": "podinfo-primary"}, "minReplicaCount": 1, "maxReplicaCount": 5,
                "pollingInterval": 10, "cooldownPeriod": 30,
                "advanced": {"horizontalPodAutoscalerConfig": {"name": "podinfo-hpa-primary"}},
                "triggers": [
                    {"name": "rps", "type": "prometheus", "metadata": {"serverAddress": "http://prom:9090",
                        "query": r#"sum(rate(http_requests_total{deployment="podinfo-primary"}[1m])) + sum(rate(x{app="podinfo-primary"}[1m]))"#}},
                    {"name": "named", "type": "prometheus", "metadata": {"query": "old"}}]})
        );
        let with_queries = AutoscalerRef {
            primary_scaler_queries: Some(BTreeMap::from([(
                "named".to_string(),
                "new".to_string(),
            )])),
            ..plain.clone()
        };
        let p = params(&with_queries, &include);
        let got = primary_scaler(&so, &p).unwrap();
        assert_eq!(got["spec"]["triggers"][1]["metadata"]["query"], "new");
        assert_eq!(
            got["spec"]["triggers"][0]["metadata"]["query"],
            so.data["spec"]["triggers"][0]["metadata"]["query"],
            "with primaryScalerQueries, triggers it does not name keep their query, as Flagger"
        );
        assert_eq!(starting_replicas(AutoscalerKind::ScaledObject, &so), 1);
        assert!(is_paused(&so));
        assert!(!paused_by(&so, "serin"));
        let mut ours = so.clone();
        ours.metadata.managed_fields = Some(vec![serde_json::from_value(json!({"manager": "serin",
            "operation": "Apply", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:autoscaling.keda.sh/paused-replicas": {}}}}}))
        .unwrap()]);
        assert!(paused_by(&ours, "serin") && !paused_by(&ours, "kustomize-controller"));
        // A pause is set at zero unless one is there; only Serin's own is taken off.
        assert_eq!(pause_change(&so, true, "serin"), None);
        assert_eq!(
            pause_change(&so, false, "serin"),
            None,
            "the user's pause stays"
        );
        assert_eq!(
            pause_change(&ours, false, "serin"),
            Some(pause_apply("shop", "podinfo-so", false))
        );
        let mut running = so.clone();
        running.metadata.annotations = None;
        assert_eq!(
            pause_change(&running, true, "serin"),
            Some(pause_apply("shop", "podinfo-so", true))
        );
        assert_eq!(pause_change(&running, false, "serin"), None);
        assert_eq!(
            pause_apply("shop", "podinfo-so", true)["metadata"]["annotations"],
            json!({KEDA_PAUSED_REPLICAS: "0"})
        );
        assert_eq!(
            pause_apply("shop", "podinfo-so", false)["metadata"].get("annotations"),
            None
        );
    }

    #[test]
    fn an_autoscaler_of_something_else_is_refused_naming_it() {
        let mut other = hpa();
        other.data["spec"]["scaleTargetRef"]["name"] = json!("frontend");
        let reference = AutoscalerRef {
            name: "podinfo".into(),
            ..AutoscalerRef::default()
        };
        let include = IncludePrefixes::default();
        let p = params(&reference, &include);
        assert_eq!(
            primary_scaler(&other, &p).unwrap_err().to_string(),
            r#"HorizontalPodAutoscaler shop/podinfo (spec.autoscalerRef) scales "frontend", not the target podinfo: point its scaleTargetRef at the target"#
        );
    }
}
