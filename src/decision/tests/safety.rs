//! The ways a tick could act on wrong state or cause an outage, each pinned by a test that failed before
//! its fix (issue "Trust the core").

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::api::Phase;
use crate::decision::*;

fn no_data() -> Checks {
    Checks::NoData {
        message: "no data for request-success-rate: is traffic reaching podinfo-canary?".into(),
    }
}

/// Defect 4: a new revision while the primary is being promoted gets no traffic at all; its analysis
/// starts once the promotion of the analysed revision completes.
#[test]
fn a_new_revision_during_promotion_gets_no_traffic_until_analysed() {
    let mut w = World::progressing(
        json!({"interval": "10s", "stepWeight": 25, "maxWeight": 50, "stepWeightPromotion": 10}),
    );
    w.run(10, Checks::Passed, &[Phase::Promoting]);
    // The copy is done; the primary rolls out r2 while the canary still serves 50%.
    w.o.primary.ready = Readiness::NotReady("1 of 3 updated replicas available".into());
    w.later(10);
    w.tick(None);
    assert_eq!(w.o.routed, Some(Traffic::Split(Weights::canary(50))));
    w.o.target.revision = "r3".into();
    w.later(1);
    let d = w.tick(None);
    assert_eq!(d.desired.traffic, Some(Traffic::Split(Weights::canary(0))));
    assert_eq!(w.phase(), Phase::Promoting);
    assert_eq!(
        w.o.primary.revision.as_deref(),
        Some("r2"),
        "the analysed revision is still promoted"
    );
    // Until the promotion completes, the canary never gets traffic back.
    w.o.primary.ready = Readiness::Ready;
    for _ in 0..5 {
        w.later(10);
        w.tick(Some(Checks::Passed));
        if w.phase() == Phase::Progressing {
            break;
        }
        assert_eq!(w.o.status.canary_weight, 0, "at {:?}", w.phase());
    }
    assert_eq!(w.o.status.last_promoted_spec.as_deref(), Some("r2"));
    assert_eq!(w.o.status.last_applied_spec.as_deref(), Some("r3"));
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(
        w.weights,
        vec![0, 25, 50, 0],
        "no step of 50 -> 40 -> ... with r3 on the canary"
    );
}

/// Defect 4, A/B: requests that match go to the primary at once too.
#[test]
fn a_new_revision_during_an_ab_promotion_gets_no_matched_requests() {
    let mut w = World::progressing(json!({"interval": "10s", "iterations": 1,
        "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}));
    w.run(10, Checks::Passed, &[Phase::Promoting]);
    w.o.primary.ready = Readiness::NotReady("rolling out".into());
    w.later(1);
    w.tick(None);
    assert_eq!(w.o.routed, Some(Traffic::Matched));
    w.o.target.revision = "r3".into();
    let d = w.tick(None);
    assert_eq!(d.desired.traffic, Some(Traffic::Split(Weights::canary(0))));
}

/// Defect 5: the promoted revision is the one the primary runs, not whatever the target holds when the
/// primary becomes ready.
#[test]
fn a_target_update_during_initialization_is_analysed() {
    let mut w = World::new(spec(json!({"interval": "10s", "stepWeight": 10})));
    w.tick(None);
    assert_eq!(w.primaries_created, vec!["r1".to_string()]);
    w.o.primary.ready = Readiness::NotReady("0 of 3 updated replicas available".into());
    w.tick(None);
    w.o.target.revision = "r2".into();
    w.o.primary.ready = Readiness::Ready;
    // The apex Service and the route switch to the primary; then it is Initialized at r1.
    w.tick(None);
    assert_eq!(w.phase(), Phase::Initializing);
    let d = w.tick(None);
    assert_eq!(w.o.status.last_promoted_spec.as_deref(), Some("r1"));
    assert_eq!(w.o.status.last_applied_spec.as_deref(), Some("r2"));
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(d.desired.canary_scale, Scale::Up);
    assert!(
        w.reasons().contains(&Reason::NewRevision),
        "{:?}",
        w.reasons()
    );
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.o.primary.revision.as_deref(), Some("r2"));
}

/// Defect 6: a rollback moves the route first; the canary's pods go only once the route reads back all
/// traffic on the primary. If the route write fails, the pods stay.
#[test]
fn rollback_scales_the_canary_down_only_after_the_route_moved_back() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 20, "threshold": 1}));
    w.tick(None);
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.routed, Some(Traffic::Split(Weights::canary(40))));
    w.later(10);
    let route_before = w.route.clone();
    let d = w.tick(Some(failed("error rate 20%")));
    assert_eq!(w.phase(), Phase::Failed);
    assert_eq!(d.desired.traffic, Some(Traffic::Split(Weights::canary(0))));
    assert_eq!(d.desired.canary_scale, Scale::Keep);
    // Say the route write failed: the route still sends 40% to the canary.
    w.route = route_before;
    w.read_back_route();
    let d = w.tick(None);
    assert_eq!(
        d.desired.canary_scale,
        Scale::Keep,
        "pods stay while the route sends them traffic"
    );
    assert!(
        d.requeue_after <= Duration::from_secs(5),
        "{:?}",
        d.requeue_after
    );
    // The route is written this time; once read back at 0, the pods go.
    let d = w.tick(None);
    assert_eq!(d.desired.canary_scale, Scale::Zero);
}

/// Defect 6, promotion's finalising: Succeeded (and the canary's pods gone) only once the route reads
/// back all traffic on the primary.
#[test]
fn finalising_waits_for_the_route_before_scaling_the_canary_down() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 50}));
    w.run(10, Checks::Passed, &[Phase::Finalising]);
    w.route_says(50);
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Finalising);
    assert_eq!(d.desired.canary_scale, Scale::Keep);
    assert_eq!(d.desired.traffic, Some(Traffic::Split(Weights::canary(0))));
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Succeeded);
    assert_eq!(d.desired.canary_scale, Scale::Zero);
}

/// Defect 8: the time the canary took to scale up does not count against the first wait for data.
#[test]
fn the_scale_up_hold_does_not_shorten_the_first_no_data_hold() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10}));
    w.o.spec.progress_deadline_seconds = Some(60);
    w.o.target.ready = Readiness::NotReady("0 of 3 updated replicas available".into());
    for _ in 0..5 {
        w.later(10);
        w.tick(None);
    }
    w.o.target.ready = Readiness::Ready;
    w.later(10);
    w.tick(None);
    assert_eq!(w.o.status.canary_weight, 10);
    // No data from here: the deadline counts from the first hold for it, 60s.
    for _ in 0..5 {
        w.later(10);
        w.tick(Some(no_data()));
        assert_eq!(w.phase(), Phase::Progressing, "rolled back early");
    }
    w.later(10);
    w.tick(Some(no_data()));
    w.later(10);
    w.tick(Some(no_data()));
    assert_eq!(w.phase(), Phase::Failed);
}

/// Defect 9: the weight in the route, as the API server stores it, is believed over the status.
#[test]
fn the_route_changed_under_serin_is_believed_over_the_status() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10}));
    w.run(10, Checks::Passed, &[Phase::Progressing]);
    w.tick(None);
    for _ in 0..2 {
        w.later(10);
        w.tick(Some(Checks::Passed));
    }
    assert_eq!(w.o.status.canary_weight, 30);
    w.route_says(20);
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(
        w.o.status.canary_weight, 30,
        "20 + one step, not 30 + one step"
    );
}

/// Defect 10: a deleted primary is rebuilt only from the last promoted revision.
#[test]
fn a_deleted_primary_is_rebuilt_from_the_last_promoted_revision_only() {
    // Settled, and the target still holds the promoted revision: rebuilt.
    let mut w = World::new(spec(json!({"interval": "10s", "stepWeight": 10})));
    w.initialize();
    w.o.primary = Primary {
        revision: None,
        ready: Readiness::NotReady("not created".into()),
    };
    let d = w.tick(None);
    assert_eq!(d.desired.create_primary.as_deref(), Some("r1"));
    assert_eq!(w.primaries_created, vec!["r1", "r1"]);

    // Mid-analysis: the target holds an unanalysed revision. Nothing is created or moved.
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10}));
    w.tick(None);
    w.later(10);
    w.tick(Some(Checks::Passed));
    w.o.primary = Primary {
        revision: None,
        ready: Readiness::NotReady("not created".into()),
    };
    let d = w.tick(None);
    assert_eq!(d.desired.create_primary, None);
    assert_eq!(d.desired.traffic, None);
    assert_eq!(d.desired.canary_scale, Scale::Keep);
    let (stalled, message) = w.condition("Stalled");
    assert_eq!(stalled, "True");
    assert!(
        message.contains("podinfo-primary is missing") && message.contains("r1"),
        "{message}"
    );
    assert_eq!(w.events.last().unwrap().reason, Reason::PrimaryMissing);

    // After a rollback: the target holds the failed revision. Never rebuilt from it.
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10, "threshold": 1}));
    w.tick(None);
    w.later(10);
    w.tick(Some(failed("bad")));
    assert_eq!(w.phase(), Phase::Failed);
    w.o.primary.revision = None;
    let d = w.tick(None);
    assert_eq!(d.desired.create_primary, None);
    assert_eq!(w.primaries_created, vec!["r1"]);
    // The target reverted to the promoted revision (in git, say): rebuilt from it.
    w.o.target.revision = "r1".into();
    let d = w.tick(None);
    assert_eq!(d.desired.create_primary.as_deref(), Some("r1"));
}

/// Defect 1: a config the target needs and that is missing (a cache not synced, or deleted) holds the
/// canary with a condition naming it; it never reads as a new revision.
#[test]
fn a_missing_config_holds_instead_of_changing_the_revision() {
    let mut w = World::new(spec(json!({"interval": "10s", "stepWeight": 10})));
    w.initialize();
    w.o.status.phase = Some(Phase::Succeeded);
    w.o.target.missing_configs = vec!["ConfigMap shop/app-config".into()];
    // What observe would compute without the config: another revision.
    w.o.target.revision = "r1-without-config".into();
    let d = w.tick(None);
    assert_eq!(
        w.phase(),
        Phase::Succeeded,
        "no analysis of a revision that is not known"
    );
    assert_eq!(d.desired.traffic, None);
    assert_eq!(d.desired.canary_scale, Scale::Keep);
    let (ready, message) = w.condition("Ready");
    assert_eq!(ready, "False");
    assert!(message.contains("ConfigMap shop/app-config"), "{message}");
    assert_eq!(w.events.last().unwrap().reason, Reason::ConfigNotFound);
    w.o.target.missing_configs.clear();
    w.o.target.revision = "r1".into();
    w.tick(None);
    assert_eq!(w.phase(), Phase::Succeeded);
    assert_eq!(w.condition("Ready").0, "True");
}

/// Defect 1: mid-analysis, a config deleted and restored holds the weight and resumes where it was.
#[test]
fn a_config_deleted_and_restored_mid_analysis_resumes_at_the_same_weight() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10}));
    w.tick(None);
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.status.canary_weight, 20);
    w.o.target.missing_configs = vec!["Secret shop/app-secret".into()];
    for _ in 0..3 {
        w.later(10);
        let d = w.tick(None);
        assert_eq!(d.desired.traffic, None);
        assert_eq!(w.phase(), Phase::Progressing);
    }
    assert_eq!(w.asked_for_checks, 1);
    w.o.target.missing_configs.clear();
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.status.canary_weight, 30);
    assert_eq!(w.o.status.last_applied_spec.as_deref(), Some("r2"));
}

/// Defect 1: initialization has the progress deadline too: past it, Stalled says why, and the wait goes
/// on (the config may still appear).
#[test]
fn initialization_past_the_progress_deadline_is_stalled_and_recovers() {
    let mut w = World::new(spec(json!({"interval": "10s", "stepWeight": 10})));
    w.o.spec.progress_deadline_seconds = Some(60);
    w.o.target.missing_configs = vec!["ConfigMap shop/app-config".into()];
    for _ in 0..6 {
        w.tick(None);
        assert_eq!(w.condition("Stalled").0, "False");
        w.later(10);
    }
    w.tick(None);
    assert_eq!(w.phase(), Phase::Initializing);
    let (stalled, message) = w.condition("Stalled");
    assert_eq!(stalled, "True");
    assert!(
        message.contains("ConfigMap shop/app-config") && message.contains("deadline"),
        "{message}"
    );
    assert!(w.primaries_created.is_empty());
    let overdue = w
        .reasons()
        .iter()
        .filter(|r| **r == Reason::ProgressDeadlineExceeded)
        .count();
    w.later(10);
    w.tick(None);
    assert_eq!(
        w.reasons()
            .iter()
            .filter(|r| **r == Reason::ProgressDeadlineExceeded)
            .count(),
        overdue,
        "one event, not one a tick"
    );
    // The config appears: the primary is created and initialization completes.
    w.o.target.missing_configs.clear();
    w.tick(None);
    assert_eq!(w.primaries_created, vec!["r1"]);
    w.initialize();
    assert_eq!(w.condition("Stalled").0, "False");
}

/// Defect 11: more results than status.checks may hold (32 metrics can run 96 checks) are cut to the
/// limit, the failed ones kept, so the status write never fails on every tick.
#[test]
fn status_checks_never_exceed_their_limit() {
    use crate::api::status::MAX_STATUS_CHECKS;
    use crate::api::{CheckStatus, CheckVerdict};
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10, "threshold": 5}));
    w.tick(None);
    let mut results: Vec<CheckStatus> = (0..96)
        .map(|i| CheckStatus {
            name: format!("m{i}"),
            verdict: CheckVerdict::Passed,
            ..CheckStatus::default()
        })
        .collect();
    results[90].verdict = CheckVerdict::Failed;
    w.later(10);
    w.tick_round(Some(CheckRound {
        verdict: failed("m90 out of range"),
        results,
        evidence: vec![],
    }));
    assert_eq!(w.o.status.checks.len(), MAX_STATUS_CHECKS);
    assert_eq!(w.o.status.checks[0].name, "m90");
}

/// Defect 12: an app adopted while serving lost its endpoints at initialization. The first tick took over
/// the user's apex Service (its selector on the primary's pods) and wrote the route to the primary while
/// the primary's pods were still starting: every request to the app found no endpoint until they were
/// ready. The apex and the route now switch once the primary is ready, and the target goes to zero only
/// once both read back that way.
#[test]
fn an_app_adopted_while_serving_keeps_its_endpoints_until_the_primary_is_ready() {
    let mut w = World::new(spec(json!({"interval": "10s", "stepWeight": 10})));
    w.o.primary = Primary {
        revision: Some("r1".into()),
        ready: Readiness::NotReady("0 of 3 updated replicas available".into()),
    };
    for _ in 0..3 {
        let d = w.tick(None);
        assert_eq!(w.phase(), Phase::Initializing);
        assert!(
            d.desired.bootstrap,
            "the primary's and canary's Services may come"
        );
        assert!(
            !d.desired.apex,
            "the apex keeps selecting the target's pods"
        );
        assert_eq!(d.desired.traffic, None, "no route to a primary not ready");
        assert_eq!(d.desired.canary_scale, Scale::Keep);
        w.later(5);
    }
    assert!(!w.o.apex_to_primary);
    assert_eq!(w.o.routed, None);

    w.o.primary.ready = Readiness::Ready;
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Initializing);
    assert!(d.desired.apex);
    assert_eq!(d.desired.traffic, Some(Traffic::Split(Weights::canary(0))));
    assert_eq!(
        d.desired.canary_scale,
        Scale::Keep,
        "the target serves until the apex is read back on the primary"
    );
    w.later(1);
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Initialized);
    assert_eq!(d.desired.canary_scale, Scale::Zero);
    assert_eq!(w.reasons().last(), Some(&Reason::Initialized));
}

/// The apex read back on the target's pods (the user's tool re-applied its Service) keeps the target's
/// pods until Serin's next write has put it back on the primary.
#[test]
fn the_target_is_not_scaled_to_zero_while_the_apex_selects_it() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 50}));
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    w.o.apex_to_primary = false;
    w.later(10);
    let d = w.tick(None);
    assert!(d.desired.apex);
    assert_eq!(d.desired.canary_scale, Scale::Keep);
    let d = w.tick(None);
    assert_eq!(d.desired.canary_scale, Scale::Zero);
}
