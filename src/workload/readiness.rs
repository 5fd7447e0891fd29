//! Whether a Deployment's rollout is done enough to count as ready, with the reason when it is not (the
//! reason ends up in the Canary's status and events).

use k8s_openapi::api::apps::v1::Deployment;

use crate::vocabulary::Readiness;

/// Ready when the controller has seen the latest spec, at least `threshold_percent` of the replicas are
/// updated and available, and no old replica is left.
pub fn readiness(d: &Deployment, threshold_percent: i32) -> Readiness {
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Readiness::NotReady(
            "waiting for the Deployment controller to see the latest spec".into(),
        );
    }
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Readiness::NotReady(format!(
            "progress deadline exceeded: {}",
            c.message.clone().unwrap_or_default()
        ));
    }
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if wanted == 0 {
        return Readiness::NotReady("scaled to zero".into());
    }
    let needed = (wanted * threshold_percent.clamp(0, 100) + 99) / 100;
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if updated < needed {
        return Readiness::NotReady(format!("{updated} of {wanted} replicas updated"));
    }
    if total > updated {
        return Readiness::NotReady(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if available < needed {
        return Readiness::NotReady(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Readiness::Ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "podinfo", "generation": 2},
            "spec": {"replicas": replicas, "selector": {}, "template": {}}, "status": status}))
        .unwrap()
    }

    #[test]
    fn ready_only_when_rolled_out() {
        let full = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        assert_eq!(
            readiness(&deployment(3, full.clone()), 100),
            Readiness::Ready
        );
        let cases = [
            (
                json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
                "latest spec",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3}),
                "1 of 3 replicas updated",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
                "1 old replicas pending",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
                "2 of 3 updated replicas available",
            ),
            (
                json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet podinfo-1 has timed out"}]}),
                "timed out",
            ),
        ];
        for (status, why) in cases {
            match readiness(&deployment(3, status), 100) {
                Readiness::NotReady(reason) => {
                    assert!(reason.contains(why), "{reason} should say {why}")
                }
                Readiness::Ready => panic!("ready, but {why}"),
            }
        }
        assert!(
            matches!(readiness(&deployment(0, full), 100), Readiness::NotReady(r) if r == "scaled to zero")
        );
    }

    #[test]
    fn the_threshold_is_a_percentage_of_replicas() {
        let partial = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 2});
        assert_eq!(
            readiness(&deployment(4, partial.clone()), 50),
            Readiness::Ready
        );
        assert!(matches!(
            readiness(&deployment(4, partial), 75),
            Readiness::NotReady(_)
        ));
    }
}
