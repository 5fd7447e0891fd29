//! The primary: a copy of the target that serves the stable revision. Its selector and pod labels take the
//! target's selector values suffixed `-primary`, so the two never select each other's pods; pod affinity
//! and topology spread terms that name the target's pods are pointed at the primary's the same way.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use serde_json::Value;

use super::configs::rewire_to_primary;
use super::metadata::{IncludePrefixes, pod_metadata};
use super::{PRIMARY_SUFFIX, REVISION_ANNOTATION, Workload, WorkloadError, WorkloadKind};

/// Label keys to values, as selectors and pod templates hold them.
pub type Labels = BTreeMap<String, String>;

pub fn primary_name(target: &str) -> String {
    format!("{target}{PRIMARY_SUFFIX}")
}

/// The target's selector labels, and the primary's (values suffixed `-primary`).
pub fn selectors(target: &Workload) -> Result<(Labels, Labels), WorkloadError> {
    let (kind, namespace, name) = (target.kind(), target.namespace(), target.name());
    let selector = target.selector().cloned().unwrap_or_default();
    if selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(WorkloadError::SelectorExpressions {
            kind,
            namespace,
            name,
        });
    }
    let labels = selector.match_labels.unwrap_or_default();
    if labels.is_empty() {
        return Err(WorkloadError::NoSelector {
            kind,
            namespace,
            name,
        });
    }
    let primary = labels
        .iter()
        .map(|(k, v)| (k.clone(), format!("{v}{PRIMARY_SUFFIX}")))
        .collect();
    Ok((labels, primary))
}

/// The primary's pod template: the target's as the user wrote it, at the primary's labels and configs,
/// annotated with its revision (so a revision that changes only a config still rolls the primary's pods).
pub fn primary_template(
    target: &Workload,
    revision: &str,
) -> Result<PodTemplateSpec, WorkloadError> {
    let (target_selector, primary_selector) = selectors(target)?;
    if target.template().is_none() {
        return Err(WorkloadError::NoTemplate {
            kind: target.kind(),
            namespace: target.namespace(),
            name: target.name(),
        });
    }
    let mut template = target.revision_template();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let mut labels = pod_metadata(meta.labels.as_ref());
    labels.extend(primary_selector);
    meta.labels = Some(labels);
    let mut annotations = pod_metadata(meta.annotations.as_ref());
    annotations.insert(REVISION_ANNOTATION.into(), revision.into());
    meta.annotations = Some(annotations);
    if let Some(spec) = template.spec.as_mut() {
        rewire_to_primary(spec);
        point_at_primary(spec, &target_selector);
    }
    Ok(template)
}

/// Affinity and topology spread selectors that pick the target's pods by its selector labels pick the
/// primary's instead (spreading the primary against itself, as the user spread the target).
fn point_at_primary(spec: &mut PodSpec, target_selector: &Labels) {
    let fix = |selector: &mut Option<LabelSelector>| {
        let Some(s) = selector.as_mut() else { return };
        for (k, v) in s.match_labels.iter_mut().flatten() {
            if target_selector.get(k) == Some(v) {
                v.push_str(PRIMARY_SUFFIX);
            }
        }
        for e in s.match_expressions.iter_mut().flatten() {
            if let Some(value) = target_selector.get(&e.key) {
                for v in e.values.iter_mut().flatten() {
                    if v == value {
                        v.push_str(PRIMARY_SUFFIX);
                    }
                }
            }
        }
    };
    for c in spec.topology_spread_constraints.iter_mut().flatten() {
        fix(&mut c.label_selector);
    }
    if let Some(a) = spec.affinity.as_mut() {
        for terms in [
            a.pod_affinity.as_mut().and_then(|p| {
                p.required_during_scheduling_ignored_during_execution
                    .as_mut()
            }),
            a.pod_anti_affinity.as_mut().and_then(|p| {
                p.required_during_scheduling_ignored_during_execution
                    .as_mut()
            }),
        ]
        .into_iter()
        .flatten()
        {
            terms.iter_mut().for_each(|t| fix(&mut t.label_selector));
        }
        for terms in [
            a.pod_affinity.as_mut().and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .as_mut()
            }),
            a.pod_anti_affinity.as_mut().and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .as_mut()
            }),
        ]
        .into_iter()
        .flatten()
        {
            terms
                .iter_mut()
                .for_each(|t| fix(&mut t.pod_affinity_term.label_selector));
        }
    }
}

/// What Serin writes into the primary besides the target's template.
pub struct PrimaryParams<'a> {
    pub owner: OwnerReference,
    pub revision: &'a str,
    /// The primary's replicas, for the kinds that have them.
    pub replicas: i32,
    /// Which of the target's labels and annotations the primary carries.
    pub include: &'a IncludePrefixes,
    /// The apex Service's name (a StatefulSet's governing Service may be it).
    pub apex: &'a str,
}

/// The governing Service of a StatefulSet's primary: the apex Service when the target's is the apex
/// (taken over, it selects the primary's pods), else `<serviceName>-primary`, a copy Serin makes of the
/// target's on the primary's pods (so each primary pod gets its own DNS name, as the target's do).
pub fn primary_service_name(target_service_name: &str, apex: &str) -> Option<String> {
    match target_service_name {
        "" => None,
        s if s == apex => Some(apex.to_string()),
        s => Some(format!("{s}{PRIMARY_SUFFIX}")),
    }
}

/// The primary as Serin applies it: owned by the Canary, annotated with its revision, JSON of its kind.
pub fn primary_object(target: &Workload, p: &PrimaryParams) -> Result<Value, WorkloadError> {
    let (_, primary_selector) = selectors(target)?;
    let template = primary_template(target, p.revision)?;
    let mut labels = p.include.copied(target.meta().labels.as_ref());
    labels.extend(primary_selector.clone());
    let mut annotations = p.include.copied(target.meta().annotations.as_ref());
    annotations.insert(REVISION_ANNOTATION.into(), p.revision.into());
    let metadata = ObjectMeta {
        name: Some(primary_name(&target.name())),
        namespace: Some(target.namespace()),
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references: Some(vec![p.owner.clone()]),
        ..ObjectMeta::default()
    };
    let selector = LabelSelector {
        match_labels: Some(primary_selector),
        match_expressions: None,
    };
    let json = match target {
        Workload::Deployment(d) => {
            let spec = d.spec.clone().unwrap_or_default();
            serde_json::to_value(Deployment {
                metadata,
                spec: Some(DeploymentSpec {
                    replicas: Some(p.replicas),
                    selector,
                    template,
                    strategy: spec.strategy,
                    min_ready_seconds: spec.min_ready_seconds,
                    revision_history_limit: spec.revision_history_limit,
                    progress_deadline_seconds: spec.progress_deadline_seconds,
                    paused: None,
                }),
                status: None,
            })
        }
        Workload::DaemonSet(d) => {
            let spec = d.spec.clone().unwrap_or_default();
            let strategy = spec.update_strategy.as_ref().and_then(|s| s.type_.clone());
            if let Some(other) = strategy.filter(|t| t != "RollingUpdate") {
                return Err(WorkloadError::UpdateStrategy {
                    kind: WorkloadKind::DaemonSet,
                    namespace: target.namespace(),
                    name: target.name(),
                    strategy: other,
                });
            }
            serde_json::to_value(DaemonSet {
                metadata,
                spec: Some(DaemonSetSpec {
                    selector,
                    template,
                    update_strategy: spec.update_strategy,
                    min_ready_seconds: spec.min_ready_seconds,
                    revision_history_limit: spec.revision_history_limit,
                }),
                status: None,
            })
        }
        Workload::StatefulSet(d) => {
            let spec = d.spec.clone().unwrap_or_default();
            let strategy = spec.update_strategy.clone().unwrap_or_default();
            let (kind, namespace, name) =
                (WorkloadKind::StatefulSet, target.namespace(), target.name());
            if let Some(other) = strategy.type_.clone().filter(|t| t != "RollingUpdate") {
                return Err(WorkloadError::UpdateStrategy {
                    kind,
                    namespace,
                    name,
                    strategy: other,
                });
            }
            if let Some(partition) = strategy
                .rolling_update
                .and_then(|r| r.partition)
                .filter(|p| *p > 0)
            {
                return Err(WorkloadError::Partition {
                    kind,
                    namespace,
                    name,
                    partition,
                });
            }
            serde_json::to_value(StatefulSet {
                metadata,
                spec: Some(StatefulSetSpec {
                    replicas: Some(p.replicas),
                    selector,
                    template,
                    service_name: spec
                        .service_name
                        .as_deref()
                        .and_then(|s| primary_service_name(s, p.apex)),
                    // Claims are named after the StatefulSet: the primary's volumes are its own.
                    volume_claim_templates: spec.volume_claim_templates,
                    pod_management_policy: spec.pod_management_policy,
                    update_strategy: spec.update_strategy,
                    min_ready_seconds: spec.min_ready_seconds,
                    revision_history_limit: spec.revision_history_limit,
                    persistent_volume_claim_retention_policy: spec
                        .persistent_volume_claim_retention_policy,
                    ordinals: spec.ordinals,
                }),
                status: None,
            })
        }
    };
    let mut json = json.unwrap_or(Value::Null);
    let resource = target.kind().resource();
    json["apiVersion"] = Value::String(resource.api_version);
    json["kind"] = Value::String(resource.kind);
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn target() -> Workload {
        Workload::Deployment(Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "podinfo", "namespace": "apps", "labels": {"app": "podinfo", "team": "web",
                    "kustomize.toolkit.fluxcd.io/name": "apps"},
                    "annotations": {"team.example.com/owner": "web", "deployment.kubernetes.io/revision": "4"}},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "podinfo"}}, "minReadySeconds": 5,
                    "template": {"metadata": {"labels": {"app": "podinfo", "version": "v1"},
                        "annotations": {"prometheus.io/scrape": "true", "kustomize.toolkit.fluxcd.io/checksum": "x"}},
                        "spec": {"containers": [{"name": "podinfo", "image": "podinfo:1",
                            "envFrom": [{"configMapRef": {"name": "podinfo-env"}}]}],
                            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                "labelSelector": {"matchLabels": {"app": "podinfo"}}}],
                            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                                "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchExpressions":
                                    [{"key": "app", "operator": "In", "values": ["podinfo", "other"]}]}}}]}}}}}
            }))
            .unwrap(),
        ))
    }

    fn daemon_set(strategy: Value) -> Workload {
        Workload::DaemonSet(Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "agent", "namespace": "ops", "labels": {"app": "agent"}},
                "spec": {"selector": {"matchLabels": {"app": "agent"}}, "updateStrategy": strategy,
                    "template": {"metadata": {"labels": {"app": "agent"}},
                        "spec": {"nodeSelector": {"disk": "ssd", "serin.dev/scale-to-zero": "true"},
                            "containers": [{"name": "agent", "image": "agent:1"}]}}}
            }))
            .unwrap(),
        ))
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "serin.dev/v1beta1".into(),
            kind: "Canary".into(),
            name: "podinfo".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn params<'a>(include: &'a IncludePrefixes) -> PrimaryParams<'a> {
        PrimaryParams {
            owner: owner(),
            revision: "abc",
            replicas: 3,
            include,
            apex: "podinfo",
        }
    }

    fn stateful_set(service_name: &str, strategy: Value) -> Workload {
        Workload::StatefulSet(Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": "shop"},
                "spec": {"replicas": 2, "serviceName": service_name, "selector": {"matchLabels": {"app": "db"}},
                    "podManagementPolicy": "Parallel", "updateStrategy": strategy,
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "db:1",
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
            }))
            .unwrap(),
        ))
    }

    #[test]
    fn the_primary_stateful_set_golden() {
        let include = IncludePrefixes::default();
        let p = primary_object(
            &stateful_set("db-headless", json!({"type": "RollingUpdate"})),
            &params(&include),
        )
        .unwrap();
        assert_eq!(
            p["spec"],
            json!({"replicas": 3, "serviceName": "db-headless-primary", "selector": {"matchLabels": {"app": "db-primary"}},
                "podManagementPolicy": "Parallel", "updateStrategy": {"type": "RollingUpdate"},
                "template": {"metadata": {"labels": {"app": "db-primary"}, "annotations": {"serin.dev/revision": "abc"}},
                    "spec": {"containers": [{"name": "db", "image": "db:1", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                "volumeClaimTemplates": [{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]})
        );
        assert_eq!(
            (p["kind"].as_str(), p["metadata"]["name"].as_str()),
            (Some("StatefulSet"), Some("db-primary"))
        );
        // Governed by the apex: the primary is too (the apex, taken over, selects its pods).
        let p = primary_object(&stateful_set("podinfo", json!({})), &params(&include)).unwrap();
        assert_eq!(p["spec"]["serviceName"], "podinfo");
        assert_eq!(primary_service_name("", "podinfo"), None);
    }

    #[test]
    fn a_stateful_set_the_primary_could_not_roll_is_refused() {
        let include = IncludePrefixes::default();
        let e = primary_object(
            &stateful_set(
                "db",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}),
            ),
            &params(&include),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "StatefulSet shop/db: spec.updateStrategy.rollingUpdate.partition is 1"
            ),
            "{e}"
        );
        let e = primary_object(
            &stateful_set("db", json!({"type": "OnDelete"})),
            &params(&include),
        )
        .unwrap_err();
        assert!(e.to_string().contains("OnDelete"), "{e}");
    }

    #[test]
    fn the_primary_deployment_golden() {
        let include = IncludePrefixes::all();
        let p = primary_object(&target(), &params(&include)).unwrap();
        assert_eq!(
            p,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "podinfo-primary", "namespace": "apps",
                    "labels": {"app": "podinfo-primary", "team": "web"},
                    "annotations": {"serin.dev/revision": "abc", "team.example.com/owner": "web"},
                    "ownerReferences": [{"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "name": "podinfo", "uid": "u",
                        "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"replicas": 3, "minReadySeconds": 5, "selector": {"matchLabels": {"app": "podinfo-primary"}},
                    "template": {"metadata": {"labels": {"app": "podinfo-primary", "version": "v1"},
                        "annotations": {"prometheus.io/scrape": "true", "serin.dev/revision": "abc"}},
                        "spec": {"containers": [{"name": "podinfo", "image": "podinfo:1",
                            "envFrom": [{"configMapRef": {"name": "podinfo-env-primary"}}]}],
                            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                "labelSelector": {"matchLabels": {"app": "podinfo-primary"}}}],
                            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                                "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchExpressions":
                                    [{"key": "app", "operator": "In", "values": ["podinfo-primary", "other"]}]}}}]}}}}}})
        );
    }

    #[test]
    fn by_default_the_primary_carries_only_its_selector_labels_and_revision() {
        let p = primary_object(&target(), &params(&IncludePrefixes::default())).unwrap();
        assert_eq!(p["metadata"]["labels"], json!({"app": "podinfo-primary"}));
        assert_eq!(
            p["metadata"]["annotations"],
            json!({"serin.dev/revision": "abc"})
        );
    }

    #[test]
    fn a_revision_that_changes_only_a_config_changes_the_primary_pods() {
        let include = IncludePrefixes::default();
        let a = primary_object(&target(), &params(&include)).unwrap();
        let b = primary_object(
            &target(),
            &PrimaryParams {
                revision: "def",
                ..params(&include)
            },
        )
        .unwrap();
        assert_ne!(a["spec"]["template"], b["spec"]["template"]);
    }

    #[test]
    fn the_primary_daemon_set_golden() {
        let include = IncludePrefixes::default();
        let p = primary_object(
            &daemon_set(json!({"type": "RollingUpdate"})),
            &params(&include),
        )
        .unwrap();
        assert_eq!(
            p,
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "agent-primary", "namespace": "ops", "labels": {"app": "agent-primary"},
                    "annotations": {"serin.dev/revision": "abc"},
                    "ownerReferences": [{"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "name": "podinfo", "uid": "u",
                        "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"selector": {"matchLabels": {"app": "agent-primary"}}, "updateStrategy": {"type": "RollingUpdate"},
                    "template": {"metadata": {"labels": {"app": "agent-primary"}, "annotations": {"serin.dev/revision": "abc"}},
                        "spec": {"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "agent", "image": "agent:1"}]}}}})
        );
    }

    #[test]
    fn workloads_serin_cannot_copy_are_errors_naming_them() {
        let e = primary_object(
            &daemon_set(json!({"type": "OnDelete"})),
            &params(&IncludePrefixes::default()),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "DaemonSet ops/agent: spec.updateStrategy.type is OnDelete; Serin needs RollingUpdate to roll the primary to a promoted revision"
        );
        let mut d: Deployment = match target() {
            Workload::Deployment(d) => (*d).clone(),
            _ => unreachable!(),
        };
        d.spec.as_mut().unwrap().selector = serde_json::from_value(
            json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
        )
        .unwrap();
        let e = primary_object(
            &Workload::Deployment(Arc::new(d)),
            &params(&IncludePrefixes::default()),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Deployment apps/podinfo: spec.selector.matchExpressions is not supported; select pods with matchLabels"
        );
    }
}
