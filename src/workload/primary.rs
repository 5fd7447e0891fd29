//! The primary: a copy of the target that serves the stable revision. Its selector and pod labels take the
//! target's selector values suffixed `-primary`, so the two never select each other's pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::ResourceExt;

use super::configs::rewire_to_primary;
use super::{PRIMARY_SUFFIX, REVISION_ANNOTATION, WorkloadError};

/// Label keys to values, as selectors and pod templates hold them.
pub type Labels = BTreeMap<String, String>;

pub fn primary_name(target: &str) -> String {
    format!("{target}{PRIMARY_SUFFIX}")
}

/// The target's selector labels, and the primary's (values suffixed `-primary`).
pub fn selectors(target: &Deployment) -> Result<(Labels, Labels), WorkloadError> {
    let (namespace, name) = (target.namespace().unwrap_or_default(), target.name_any());
    let selector = target
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    if selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(WorkloadError::SelectorExpressions { namespace, name });
    }
    let labels = selector.match_labels.unwrap_or_default();
    if labels.is_empty() {
        return Err(WorkloadError::NoSelector { namespace, name });
    }
    let primary = labels
        .iter()
        .map(|(k, v)| (k.clone(), format!("{v}{PRIMARY_SUFFIX}")))
        .collect();
    Ok((labels, primary))
}

/// The primary's pod template: the target's, at the primary's labels and configs.
pub fn primary_template(target: &Deployment) -> Result<PodTemplateSpec, WorkloadError> {
    let (_, primary_selector) = selectors(target)?;
    let mut template = target
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .ok_or_else(|| WorkloadError::NoTemplate {
            namespace: target.namespace().unwrap_or_default(),
            name: target.name_any(),
        })?;
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .extend(primary_selector);
    if let Some(spec) = template.spec.as_mut() {
        rewire_to_primary(spec);
    }
    Ok(template)
}

/// The primary Deployment as Serin applies it: owned by the Canary, annotated with its revision.
pub fn primary_deployment(
    target: &Deployment,
    owner: OwnerReference,
    revision: &str,
    replicas: i32,
) -> Result<Deployment, WorkloadError> {
    let (_, primary_selector) = selectors(target)?;
    let template = primary_template(target)?;
    let spec = target.spec.clone().unwrap_or_default();
    let mut labels = target.labels().clone();
    labels.extend(primary_selector.clone());
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(primary_name(&target.name_any())),
            namespace: target.namespace(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                REVISION_ANNOTATION.to_string(),
                revision.to_string(),
            )])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(primary_selector),
                match_expressions: None,
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target() -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "apps", "labels": {"app": "podinfo", "team": "web"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "podinfo"}}, "minReadySeconds": 5,
                "template": {"metadata": {"labels": {"app": "podinfo", "version": "v1"}},
                    "spec": {"containers": [{"name": "podinfo", "image": "podinfo:1", "envFrom": [{"configMapRef": {"name": "podinfo-env"}}]}]}}}
        }))
        .unwrap()
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

    #[test]
    fn the_primary_selects_its_own_pods_and_uses_its_own_configs() {
        let p = primary_deployment(&target(), owner(), "abc", 3).unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("podinfo-primary"));
        assert_eq!(
            p.annotations().get(REVISION_ANNOTATION).map(String::as_str),
            Some("abc")
        );
        assert_eq!(
            p.labels().get("app").map(String::as_str),
            Some("podinfo-primary")
        );
        assert_eq!(p.labels().get("team").map(String::as_str), Some("web"));
        let spec = p.spec.unwrap();
        assert_eq!(
            spec.selector
                .match_labels
                .unwrap()
                .get("app")
                .map(String::as_str),
            Some("podinfo-primary")
        );
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(
            pod_labels.get("app").map(String::as_str),
            Some("podinfo-primary")
        );
        assert_eq!(pod_labels.get("version").map(String::as_str), Some("v1"));
        let container = &spec.template.spec.unwrap().containers[0];
        assert_eq!(
            container.env_from.as_ref().unwrap()[0]
                .config_map_ref
                .as_ref()
                .unwrap()
                .name,
            "podinfo-env-primary"
        );
        assert_eq!((spec.replicas, spec.min_ready_seconds), (Some(3), Some(5)));
        assert_eq!(p.metadata.owner_references.unwrap()[0].kind, "Canary");
    }

    #[test]
    fn selectors_serin_cannot_copy_are_errors_naming_the_deployment() {
        let mut t = target();
        t.spec.as_mut().unwrap().selector = serde_json::from_value(
            json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
        )
        .unwrap();
        let e = primary_deployment(&t, owner(), "abc", 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Deployment apps/podinfo: spec.selector.matchExpressions is not supported; select pods with matchLabels"
        );
    }
}
