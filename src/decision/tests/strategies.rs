//! Blue/green, A/B, provider kubernetes, skipped analysis and stepped promotion.

use serde_json::json;

use super::*;
use crate::api::{CanarySpec, Phase, Provider};
use crate::decision::*;

#[test]
fn skip_analysis_promotes_at_once() {
    let mut s = spec(json!({"interval": "10s", "stepWeight": 10}));
    s.skip_analysis = true;
    let mut w = World::new(s);
    w.initialize();
    w.o.target.revision = "r2".into();
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Promoting);
    assert_eq!(d.desired.promote_primary.as_deref(), Some("r2"));
    w.run(1, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.asked_for_checks, 0);
    assert_eq!(w.weights, vec![0]);
}

#[test]
fn no_analysis_at_all_means_skip_analysis() {
    let s: CanarySpec =
        serde_json::from_value(json!({"targetRef": {"name": "podinfo"}, "service": {"port": 80}}))
            .unwrap();
    let mut w = World::new(s);
    w.initialize();
    w.o.target.revision = "r2".into();
    w.tick(None);
    assert_eq!(w.phase(), Phase::Promoting);
}

#[test]
fn blue_green_counts_iterations_then_routes_all_traffic_to_the_canary_before_promoting() {
    let mut w = World::progressing(json!({"interval": "10s", "iterations": 3}));
    for expected in 1..=3 {
        w.later(10);
        w.tick(Some(Checks::Passed));
        assert_eq!(
            (w.o.status.iterations, w.o.status.canary_weight),
            (expected, 0)
        );
    }
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.status.canary_weight, 100);
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.phase(), Phase::Promoting);
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.weights, vec![0, 100, 0]);
    assert_eq!(w.asked_for_checks, 5);
}

#[test]
fn provider_kubernetes_runs_blue_green_without_touching_routes() {
    let mut s = spec(json!({"interval": "10s", "iterations": 2}));
    s.provider = Some(Provider::Kubernetes);
    let mut w = World::new(s);
    w.initialize();
    w.o.target.revision = "r2".into();
    let d = w.tick(None);
    assert_eq!(d.desired.traffic, None);
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert!(w.weights.is_empty());
    assert_eq!(w.o.primary.revision.as_deref(), Some("r2"));
}

#[test]
fn ab_testing_routes_matching_requests_then_counts_iterations() {
    let mut w = World::progressing(json!({"interval": "10s", "iterations": 2,
        "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}));
    let d = w.tick(None);
    assert_eq!(d.desired.traffic, Some(Traffic::Matched));
    assert_eq!(w.asked_for_checks, 0);
    for expected in 1..=2 {
        w.later(10);
        let d = w.tick(Some(Checks::Passed));
        assert_eq!(d.desired.traffic, Some(Traffic::Matched));
        assert_eq!(w.o.status.iterations, expected);
    }
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.phase(), Phase::Promoting);
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.o.primary.revision.as_deref(), Some("r2"));
}

#[test]
fn step_weight_promotion_moves_traffic_back_a_step_per_interval() {
    let mut w = World::progressing(
        json!({"interval": "10s", "stepWeight": 50, "maxWeight": 50, "stepWeightPromotion": 20}),
    );
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.weights, vec![0, 50, 30, 10, 0]);
}

#[test]
fn canary_with_mirror_judges_one_mirrored_step_before_the_first_weight() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 20, "maxWeight": 40,
        "mirror": true, "mirrorWeight": 50}));
    w.later(10);
    let d = w.tick(None);
    assert_eq!(d.desired.traffic, Some(Traffic::Mirrored));
    assert_eq!(w.asked_for_checks, 0, "nothing reached the canary yet");
    assert!(w.reasons().contains(&Reason::MirroringStarted));
    // Read back from the stored route: a restart would resume mirroring, not skip it.
    assert_eq!(w.o.routed, Some(Traffic::Mirrored));
    let stored = &w.route.as_ref().unwrap().data["spec"]["rules"][0]["filters"][0];
    assert_eq!(stored["requestMirror"]["percent"], 50);
    // Ticks before the interval change nothing.
    w.later(3);
    assert_eq!(w.tick(None).desired.traffic, Some(Traffic::Mirrored));
    w.later(7);
    let d = w.tick(Some(Checks::Passed));
    assert_eq!(w.asked_for_checks, 1, "the mirrored step is judged");
    assert_eq!(d.desired.traffic, Some(Traffic::Split(Weights::canary(20))));
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.weights, vec![0, 20, 40, 0]);
}

#[test]
fn a_mirrored_step_that_fails_its_checks_rolls_back_without_shifting_traffic() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 20, "threshold": 2,
        "mirror": true}));
    w.later(10);
    w.tick(None);
    for _ in 0..2 {
        w.later(10);
        let d = w.tick(Some(failed("request-success-rate 50 < 99")));
        assert_ne!(d.desired.traffic, Some(Traffic::Split(Weights::canary(20))));
    }
    assert_eq!(w.phase(), Phase::Failed);
    assert_eq!(w.weights, vec![0]);
    assert_eq!(w.o.routed, Some(Traffic::Split(Weights::canary(0))));
}

#[test]
fn blue_green_with_mirror_mirrors_every_iteration_then_routes_all_traffic_to_the_canary() {
    let mut w = World::progressing(json!({"interval": "10s", "iterations": 2, "mirror": true}));
    w.later(10);
    assert_eq!(w.tick(None).desired.traffic, Some(Traffic::Mirrored));
    for expected in 1..=2 {
        w.later(10);
        let d = w.tick(Some(Checks::Passed));
        assert_eq!(w.o.status.iterations, expected);
        assert_eq!(d.desired.traffic, Some(Traffic::Mirrored));
    }
    w.later(10);
    let d = w.tick(Some(Checks::Passed));
    assert_eq!(
        d.desired.traffic,
        Some(Traffic::Split(Weights::canary(100)))
    );
    assert!(
        w.events.iter().any(|e| e
            .message
            .starts_with("Stop mirroring and route all traffic")),
        "{:?}",
        w.events
    );
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.weights, vec![0, 100, 0]);
    assert_eq!(w.asked_for_checks, 4);
}

#[test]
fn mirror_with_a_router_that_cannot_mirror_is_named_and_never_asked_for() {
    let mut s = spec(json!({"interval": "10s", "iterations": 2, "mirror": true}));
    s.provider = Some(Provider::Linkerd);
    let mut w = World::new(s);
    w.tick(None);
    let (_, message) = w.condition("Unsupported");
    assert!(message.contains("spec.analysis.mirror"), "{message}");
    let mut s = spec(json!({"interval": "10s", "iterations": 2, "mirror": true}));
    s.provider = Some(Provider::Istio);
    let mut w = World::new(s);
    w.tick(None);
    assert!(
        !w.o.status
            .conditions
            .iter()
            .any(|c| c.type_ == "Unsupported"
                && c.message.as_deref().unwrap_or("").contains("mirror")),
        "istio mirrors"
    );
}
