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
    w.tick(None);
    w.tick(None);
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
    w.tick(None);
    w.tick(None);
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
    w.tick(None);
    w.tick(None);
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
