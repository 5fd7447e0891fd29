//! Scaling a target: a Deployment or a StatefulSet by its replicas; a DaemonSet, which has none, as Flagger does it, by a
//! node selector no node matches, so its pods go from every node (and come back when it is removed).
//!
//! The writes are server-side applies under Serin's field manager that hold only the field Serin drives,
//! forced (Serin must drive it for a canary to run at all, as Flagger does). On a DaemonSet Serin owns
//! only its node selector key: an apply without it removes the key and nothing else of the user's.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value, json};

use super::{Workload, WorkloadKind};

/// The node selector that keeps a DaemonSet's pods off every node.
pub const SCALED_TO_ZERO_KEY: &str = "serin.dev/scale-to-zero";

/// What a target is scaled to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleTo {
    Zero,
    /// Running: these replicas for a Deployment, every node for a DaemonSet.
    Running(i32),
    /// Running at whatever its autoscaler says; from zero, at these replicas.
    Started(i32),
}

/// Whether the DaemonSet pod template carries Serin's scale-to-zero mark.
pub fn is_marked(template: &PodTemplateSpec) -> bool {
    template
        .spec
        .as_ref()
        .and_then(|s| s.node_selector.as_ref())
        .is_some_and(|n| n.contains_key(SCALED_TO_ZERO_KEY))
}

/// Takes Serin's mark off a pod template (an emptied node selector reads as none).
pub fn unmark(template: &mut PodTemplateSpec) {
    if let Some(spec) = template.spec.as_mut() {
        if let Some(n) = spec.node_selector.as_mut() {
            n.remove(SCALED_TO_ZERO_KEY);
        }
        if spec.node_selector.as_ref().is_some_and(|n| n.is_empty()) {
            spec.node_selector = None;
        }
    }
}

/// Whether the target already is at `to`, as far as the field Serin drives says.
pub fn is_at(target: &Workload, to: ScaleTo) -> bool {
    match (target, to) {
        (Workload::DaemonSet(_), ScaleTo::Zero) => target.template().is_some_and(is_marked),
        (Workload::DaemonSet(_), ScaleTo::Running(_) | ScaleTo::Started(_)) => {
            !target.template().is_some_and(is_marked)
        }
        (Workload::Deployment(_) | Workload::StatefulSet(_), ScaleTo::Zero) => {
            target.replicas() == Some(0)
        }
        (Workload::Deployment(_) | Workload::StatefulSet(_), ScaleTo::Running(n)) => {
            target.replicas() == Some(n)
        }
        // Absent replicas are 1 to the API server.
        (Workload::Deployment(_) | Workload::StatefulSet(_), ScaleTo::Started(_)) => {
            target.replicas().unwrap_or(1) > 0
        }
    }
}

/// The apply that scales the workload `kind` `namespace/name` to `to`.
pub fn scale_apply(kind: WorkloadKind, namespace: &str, name: &str, to: ScaleTo) -> Value {
    let resource = kind.resource();
    let mut object = json!({"apiVersion": resource.api_version, "kind": resource.kind,
        "metadata": {"name": name, "namespace": namespace}});
    match (kind, to) {
        (WorkloadKind::Deployment | WorkloadKind::StatefulSet, ScaleTo::Zero) => {
            object["spec"] = json!({"replicas": 0})
        }
        (
            WorkloadKind::Deployment | WorkloadKind::StatefulSet,
            ScaleTo::Running(n) | ScaleTo::Started(n),
        ) => object["spec"] = json!({"replicas": n}),
        (WorkloadKind::DaemonSet, ScaleTo::Zero) => {
            object["spec"] =
                json!({"template": {"spec": {"nodeSelector": {SCALED_TO_ZERO_KEY: "true"}}}})
        }
        // Nothing: the key Serin owned goes, the user's node selector stays.
        (WorkloadKind::DaemonSet, ScaleTo::Running(_) | ScaleTo::Started(_)) => {}
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn daemon_set(node_selector: Value) -> Workload {
        Workload::DaemonSet(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "agent", "namespace": "ops"},
                "spec": {"selector": {"matchLabels": {"app": "agent"}},
                    "template": {"spec": {"nodeSelector": node_selector, "containers": []}}}}))
            .unwrap(),
        ))
    }

    #[test]
    fn a_daemon_set_is_scaled_by_a_node_selector_key_of_serins_own() {
        let running = daemon_set(json!({"disk": "ssd"}));
        let zero = daemon_set(json!({"disk": "ssd", SCALED_TO_ZERO_KEY: "true"}));
        assert!(is_at(&running, ScaleTo::Running(1)) && !is_at(&running, ScaleTo::Zero));
        assert!(is_at(&zero, ScaleTo::Zero) && !is_at(&zero, ScaleTo::Running(1)));
        assert_eq!(
            scale_apply(WorkloadKind::DaemonSet, "ops", "agent", ScaleTo::Zero),
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "ops"},
                "spec": {"template": {"spec": {"nodeSelector": {SCALED_TO_ZERO_KEY: "true"}}}}})
        );
        assert_eq!(
            scale_apply(WorkloadKind::DaemonSet, "ops", "agent", ScaleTo::Running(3)),
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "ops"}})
        );
        // The revision is the template as the user wrote it, scaled or not.
        assert_eq!(zero.revision_template(), running.revision_template());
        assert_eq!(
            daemon_set(json!({SCALED_TO_ZERO_KEY: "true"}))
                .revision_template()
                .spec
                .unwrap()
                .node_selector,
            None
        );
    }

    #[test]
    fn a_deployment_with_an_autoscaler_is_only_started_from_zero() {
        let at = |replicas: i32| {
            Workload::Deployment(Arc::new(
                serde_json::from_value(json!({"metadata": {"name": "podinfo"},
                    "spec": {"replicas": replicas, "selector": {}, "template": {}}}))
                .unwrap(),
            ))
        };
        assert!(!is_at(&at(0), ScaleTo::Started(2)));
        assert!(
            is_at(&at(1), ScaleTo::Started(2)),
            "its autoscaler's business now"
        );
        assert!(is_at(&at(5), ScaleTo::Started(2)));
        assert!(!is_at(&at(5), ScaleTo::Running(2)));
    }

    #[test]
    fn a_deployment_is_scaled_by_its_replicas() {
        assert_eq!(
            scale_apply(
                WorkloadKind::Deployment,
                "shop",
                "podinfo",
                ScaleTo::Running(3)
            )["spec"],
            json!({"replicas": 3})
        );
        assert_eq!(
            scale_apply(WorkloadKind::Deployment, "shop", "podinfo", ScaleTo::Zero)["spec"],
            json!({"replicas": 0})
        );
    }
}
