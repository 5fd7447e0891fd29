//! Whether a workload's rollout is done enough to count as ready, with the reason when it is not (the
//! reason ends up in the Canary's status and events).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};

use super::Workload;
use super::scale::is_marked;
use crate::vocabulary::Readiness;

pub fn readiness(w: &Workload, threshold_percent: i32) -> Readiness {
    match w {
        Workload::Deployment(d) => deployment_readiness(d, threshold_percent),
        Workload::DaemonSet(d) => daemon_set_readiness(d, threshold_percent),
        Workload::StatefulSet(s) => stateful_set_readiness(s, threshold_percent),
    }
}

/// Ready when the controller has seen the latest spec, at least `threshold_percent` of the replicas are
/// updated and available, and no old replica is left.
fn deployment_readiness(d: &Deployment, threshold_percent: i32) -> Readiness {
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
    replicas_readiness(
        Replicas {
            wanted: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            updated: status.updated_replicas.unwrap_or(0),
            total: status.replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
        },
        threshold_percent,
    )
}

/// A workload's replica counts, as its controller reports them.
struct Replicas {
    wanted: i32,
    updated: i32,
    total: i32,
    available: i32,
}

/// Ready when at least `threshold_percent` of the wanted replicas are updated and available, and no old
/// one is left.
fn replicas_readiness(r: Replicas, threshold_percent: i32) -> Readiness {
    let Replicas {
        wanted,
        updated,
        total,
        available,
    } = r;
    if wanted == 0 {
        return Readiness::NotReady("scaled to zero".into());
    }
    let needed = (wanted * threshold_percent.clamp(0, 100) + 99) / 100;
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

/// Ready when the controller has seen the latest spec, every node that should run a pod runs the latest
/// template, and at least `threshold_percent` of them are available (as `kubectl rollout status` and
/// Flagger judge a DaemonSet). Scaled to zero (Serin's node selector), it is not ready.
fn daemon_set_readiness(d: &DaemonSet, threshold_percent: i32) -> Readiness {
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Readiness::NotReady(
            "waiting for the DaemonSet controller to see the latest spec".into(),
        );
    }
    if d.spec.as_ref().is_some_and(|s| is_marked(&s.template)) {
        return Readiness::NotReady("scaled to zero".into());
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    if updated < desired {
        return Readiness::NotReady(format!("{updated} of {desired} nodes run the latest pods"));
    }
    let needed = (desired * threshold_percent.clamp(0, 100) + 99) / 100;
    let available = status.number_available.unwrap_or(0);
    if available < needed {
        return Readiness::NotReady(format!("{available} of {desired} pods available"));
    }
    Readiness::Ready
}

/// Ready when the controller has seen the latest spec, at least `threshold_percent` of the replicas run
/// the latest revision and are available, and no pod of an older revision is left.
fn stateful_set_readiness(s: &StatefulSet, threshold_percent: i32) -> Readiness {
    let generation = s.metadata.generation.unwrap_or(0);
    let status = s.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Readiness::NotReady(
            "waiting for the StatefulSet controller to see the latest spec".into(),
        );
    }
    replicas_readiness(
        Replicas {
            wanted: s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            updated: status.updated_replicas.unwrap_or(0),
            total: status.replicas,
            available: status.available_replicas.unwrap_or(0),
        },
        threshold_percent,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, status: serde_json::Value) -> Workload {
        Workload::Deployment(std::sync::Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "podinfo", "generation": 2},
                "spec": {"replicas": replicas, "selector": {}, "template": {}}, "status": status}))
            .unwrap(),
        ))
    }

    fn daemon_set(node_selector: serde_json::Value, status: serde_json::Value) -> Workload {
        Workload::DaemonSet(std::sync::Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "agent", "generation": 2},
                "spec": {"selector": {}, "template": {"spec": {"containers": [], "nodeSelector": node_selector}}},
                "status": status}))
            .unwrap(),
        ))
    }

    #[test]
    fn a_stateful_set_is_ready_when_its_pods_run_the_latest_revision() {
        let sts = |replicas: i32, status: serde_json::Value| {
            Workload::StatefulSet(std::sync::Arc::new(
                serde_json::from_value(json!({"metadata": {"name": "db", "generation": 2},
                    "spec": {"replicas": replicas, "selector": {}, "template": {}}, "status": status}))
                .unwrap(),
            ))
        };
        let full = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert_eq!(readiness(&sts(2, full.clone()), 100), Readiness::Ready);
        let cases = [
            (
                sts(2, json!({"observedGeneration": 1, "replicas": 2})),
                "latest spec",
            ),
            (
                sts(
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}),
                ),
                "1 of 2 replicas updated",
            ),
            (
                sts(
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                ),
                "1 of 2 updated replicas available",
            ),
            (sts(0, full), "scaled to zero"),
        ];
        for (s, why) in cases {
            match readiness(&s, 100) {
                Readiness::NotReady(reason) => {
                    assert!(reason.contains(why), "{reason} should say {why}")
                }
                Readiness::Ready => panic!("ready, but {why}"),
            }
        }
    }

    #[test]
    fn a_daemon_set_is_ready_when_every_node_runs_the_latest_pods() {
        let status = |observed: i64, updated: i32, available: i32| {
            json!({"observedGeneration": observed, "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                "numberMisscheduled": 0, "numberReady": available, "updatedNumberScheduled": updated,
                "numberAvailable": available})
        };
        assert_eq!(
            readiness(&daemon_set(json!({}), status(2, 3, 3)), 100),
            Readiness::Ready
        );
        let cases = [
            (daemon_set(json!({}), status(1, 3, 3)), "latest spec"),
            (
                daemon_set(json!({}), status(2, 2, 3)),
                "2 of 3 nodes run the latest pods",
            ),
            (
                daemon_set(json!({}), status(2, 3, 2)),
                "2 of 3 pods available",
            ),
            (
                daemon_set(
                    json!({crate::workload::scale::SCALED_TO_ZERO_KEY: "true"}),
                    status(2, 3, 3),
                ),
                "scaled to zero",
            ),
        ];
        for (ds, why) in cases {
            match readiness(&ds, 100) {
                Readiness::NotReady(reason) => {
                    assert!(reason.contains(why), "{reason} should say {why}")
                }
                Readiness::Ready => panic!("ready, but {why}"),
            }
        }
        assert_eq!(
            readiness(&daemon_set(json!({}), status(2, 3, 2)), 60),
            Readiness::Ready
        );
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
