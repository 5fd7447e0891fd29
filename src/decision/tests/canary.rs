//! The canary strategy: stepping, checks, holds, deadlines, new revisions, restarts, retries.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::api::Phase;
use crate::decision::*;

#[test]
fn initialization_waits_for_the_primary_then_scales_the_target_to_zero() {
    let mut w = World::new(spec(json!({"interval": "10s", "stepWeight": 10})));
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Initializing);
    assert!(d.desired.bootstrap);
    assert_eq!(d.desired.canary_scale, Scale::Keep);
    assert_eq!(
        d.desired.traffic, None,
        "no route before the primary is ready"
    );
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Initializing);
    assert_eq!(d.desired.traffic, Some(Traffic::Split(Weights::canary(0))));
    assert_eq!(
        d.desired.canary_scale,
        Scale::Keep,
        "the apex has not been read back selecting the primary yet"
    );
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Initialized);
    assert_eq!(d.desired.canary_scale, Scale::Zero);
    assert_eq!(w.o.status.last_promoted_spec.as_deref(), Some("r1"));
    assert_eq!(w.condition("Ready").0, "True");
    // Nothing more happens without a new revision, and the next look is half an hour away (a watch
    // brings any change sooner).
    w.later(600);
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Initialized);
    assert!(d.events.is_empty());
    assert_eq!(d.requeue_after, Duration::from_secs(1800));
    // A new revision is looked at again within its interval.
    w.o.target.revision = "r2".into();
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing);
    assert!(
        d.requeue_after <= Duration::from_secs(10),
        "{:?}",
        d.requeue_after
    );
}

#[test]
fn canary_steps_to_max_weight_then_promotes() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10, "maxWeight": 30}));
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.weights, vec![0, 10, 20, 30, 0]);
    assert_eq!(w.o.primary.revision.as_deref(), Some("r2"));
    assert_eq!(w.o.status.last_promoted_spec.as_deref(), Some("r2"));
    assert_eq!(w.o.status.canary_weight, 0);
    // The first step needs no checks (no traffic at weight 0); each later one does.
    assert_eq!(w.asked_for_checks, 3);
    let r = w.reasons();
    for reason in [
        Reason::NewRevision,
        Reason::CanaryReady,
        Reason::WeightAdvanced,
        Reason::Promoting,
        Reason::RoutingToPrimary,
        Reason::Promoted,
    ] {
        assert!(r.contains(&reason), "{reason:?} in {r:?}");
    }
    assert_eq!(w.condition("Promoted").0, "True");
    assert_eq!(w.condition("Ready").0, "True");
    assert_eq!(w.condition("Reconciling").0, "False");
}

#[test]
fn the_canary_is_scaled_up_during_analysis_and_down_after() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 50}));
    w.later(10);
    assert_eq!(w.tick(Some(Checks::Passed)).desired.canary_scale, Scale::Up);
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.tick(None).desired.canary_scale, Scale::Zero);
}

#[test]
fn no_step_before_the_interval_is_up() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10}));
    w.tick(None);
    assert_eq!(w.o.status.canary_weight, 10);
    w.later(3);
    let d = w.tick(None);
    assert_eq!(w.o.status.canary_weight, 10);
    assert_eq!(d.requeue_after, Duration::from_secs(7));
    assert_eq!(w.asked_for_checks, 0);
}

#[test]
fn step_weights_are_followed_in_order() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeights": [5, 20, 50]}));
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.weights, vec![0, 5, 20, 50, 0]);
}

#[test]
fn step_weight_is_capped_at_max_weight() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 20, "maxWeight": 50}));
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.weights, vec![0, 20, 40, 50, 0]);
}

#[test]
fn failed_checks_at_threshold_roll_back_and_leave_the_primary_alone() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10, "threshold": 2}));
    w.tick(None);
    w.later(10);
    w.tick(Some(failed(
        "request-success-rate 71.2% is below the minimum 99%",
    )));
    assert_eq!(
        (
            w.phase(),
            w.o.status.failed_checks,
            w.o.status.canary_weight
        ),
        (Phase::Progressing, 1, 10)
    );
    w.later(10);
    let d = w.tick(Some(failed(
        "request-success-rate 70.1% is below the minimum 99%",
    )));
    assert_eq!(w.phase(), Phase::Failed);
    assert_eq!(w.o.status.failed_checks, 2);
    assert_eq!(d.desired.traffic, Some(Traffic::Split(Weights::canary(0))));
    // The canary's pods go on the next tick, once the route reads back all traffic on the primary.
    assert_eq!(d.desired.canary_scale, Scale::Keep);
    assert_eq!(w.tick(None).desired.canary_scale, Scale::Zero);
    assert_eq!(w.primary_revision_writes, 0);
    assert_eq!(w.o.primary.revision.as_deref(), Some("r1"));
    let rolled_back = w
        .events
        .iter()
        .find(|e| e.reason == Reason::RolledBack)
        .unwrap();
    assert!(
        rolled_back.warning && rolled_back.message.contains("70.1%"),
        "{rolled_back:?}"
    );
    let (stalled, message) = w.condition("Stalled");
    assert_eq!(stalled, "True");
    assert!(message.contains("70.1%"), "{message}");
    assert_eq!(w.condition("Promoted").0, "False");
    // Failed stays failed: the same revision does not start again by itself.
    w.later(600);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Failed);
}

#[test]
fn a_canary_that_never_gets_ready_fails_at_the_progress_deadline() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10}));
    w.o.spec.progress_deadline_seconds = Some(60);
    w.o.target.ready = Readiness::NotReady("0 of 3 updated replicas available".into());
    for _ in 0..5 {
        w.later(10);
        w.tick(None);
        assert_eq!(w.phase(), Phase::Progressing);
    }
    assert_eq!(w.o.status.canary_weight, 0);
    // Held since the first tick that saw it not ready, 40s ago: 61s is past the 60s deadline.
    w.later(21);
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Failed);
    assert!(
        w.condition("Ready")
            .1
            .contains("0 of 3 updated replicas available")
    );
    assert_eq!(d.desired.canary_scale, Scale::Zero);
    assert_eq!(w.o.primary.revision.as_deref(), Some("r1"));
}

#[test]
fn no_data_holds_the_weight_then_fails_at_the_deadline() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10}));
    w.o.spec.progress_deadline_seconds = Some(30);
    w.tick(None);
    let no_data = Checks::NoData {
        message: "no data for request-success-rate: is traffic reaching podinfo-canary?".into(),
    };
    for _ in 0..3 {
        w.later(10);
        w.tick(Some(no_data.clone()));
        assert_eq!(
            (
                w.phase(),
                w.o.status.canary_weight,
                w.o.status.failed_checks
            ),
            (Phase::Progressing, 10, 0)
        );
    }
    w.later(10);
    w.tick(Some(no_data));
    assert_eq!(w.phase(), Phase::Failed);
    assert!(
        w.condition("Ready")
            .1
            .contains("no data for request-success-rate")
    );
    assert_eq!(
        w.o.status.failed_checks, 0,
        "no data is never a failed check"
    );
}

#[test]
fn each_checks_result_is_kept_in_the_status_until_the_next_revision() {
    use crate::api::{CheckStatus, CheckVerdict};
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10, "threshold": 2}));
    w.tick(None);
    let result = CheckStatus {
        name: "request-success-rate".into(),
        value: Some(80.0),
        threshold_range: None,
        verdict: CheckVerdict::Failed,
        message: Some("request-success-rate 80% < 99% (min)".into()),
    };
    w.later(10);
    w.tick_round(Some(CheckRound {
        verdict: failed("request-success-rate 80% < 99% (min)"),
        results: vec![result.clone()],
        evidence: vec![],
    }));
    assert_eq!(w.o.status.checks, vec![result.clone()]);
    let checked = w.events.last().unwrap();
    assert_eq!(checked.reason, Reason::CheckFailed);
    assert!(checked.message.contains("80% < 99%"), "{}", checked.message);
    // Between rounds (before the interval is up) the last results stay.
    w.later(3);
    w.tick(None);
    assert_eq!(w.o.status.checks, vec![result]);
    // A new revision starts over without the old revision's results.
    w.o.target.revision = "r3".into();
    w.tick(None);
    assert!(w.o.status.checks.is_empty());
}

#[test]
fn data_returning_ends_the_hold() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10}));
    w.o.spec.progress_deadline_seconds = Some(30);
    w.tick(None);
    w.later(10);
    w.tick(Some(Checks::NoData {
        message: "Prometheus unreachable".into(),
    }));
    assert!(w.o.status.holding_since.is_some());
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(
        (w.o.status.canary_weight, w.o.status.holding_since.clone()),
        (20, None)
    );
    // The old hold does not count against the deadline any more.
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
}

#[test]
fn a_new_revision_mid_analysis_starts_over_at_weight_zero() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10, "threshold": 5}));
    w.tick(None);
    w.later(10);
    w.tick(Some(failed("latency")));
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(
        (w.o.status.canary_weight, w.o.status.failed_checks),
        (20, 1)
    );
    w.o.target.revision = "r3".into();
    w.later(1);
    let d = w.tick(None);
    assert_eq!(d.desired.traffic, Some(Traffic::Split(Weights::canary(0))));
    assert_eq!((w.o.status.canary_weight, w.o.status.failed_checks), (0, 0));
    assert_eq!(w.o.status.last_applied_spec.as_deref(), Some("r3"));
    assert_eq!(w.events.last().unwrap().reason, Reason::NewRevision);
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.o.primary.revision.as_deref(), Some("r3"));
}

#[test]
fn suspend_stops_the_analysis_where_it_is() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10}));
    w.tick(None);
    w.o.spec.suspend = true;
    for _ in 0..5 {
        w.later(10);
        let d = w.tick(None);
        assert_eq!(d.desired.traffic, Some(Traffic::Split(Weights::canary(10))));
    }
    assert_eq!(w.asked_for_checks, 0);
    w.o.spec.suspend = false;
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.status.canary_weight, 20);
}

#[test]
fn a_suspended_canary_starts_no_new_analysis() {
    let mut w = World::new(spec(json!({"interval": "10s", "stepWeight": 10})));
    w.initialize();
    w.o.spec.suspend = true;
    w.o.target.revision = "r2".into();
    w.tick(None);
    assert_eq!(w.phase(), Phase::Initialized);
    w.o.spec.suspend = false;
    w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing);
}

#[test]
fn a_restart_resumes_at_the_weight_in_the_route_without_redoing_steps() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10}));
    w.tick(None);
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.status.canary_weight, 20);
    // The route was written at 30, then the controller died before writing the status.
    w.route_says(30);
    w.later(4);
    w.tick(None);
    assert_eq!(
        w.o.status.canary_weight, 30,
        "the route's weight is believed"
    );
    assert_eq!(w.asked_for_checks, 1, "no step before the interval is up");
    w.later(6);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.status.canary_weight, 40);
}

#[test]
fn a_failed_revision_is_retried_by_annotation_once_per_value() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10}));
    w.tick(None);
    w.later(10);
    w.tick(Some(failed("bad")));
    assert_eq!(w.phase(), Phase::Failed);
    w.o.retry = Some("1".into());
    w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(w.o.status.last_applied_spec.as_deref(), Some("r2"));
    assert_eq!(w.events.last().unwrap().reason, Reason::Retrying);
    w.tick(None);
    w.later(10);
    w.tick(Some(failed("still bad")));
    assert_eq!(w.phase(), Phase::Failed);
    w.later(10);
    w.tick(None);
    assert_eq!(
        w.phase(),
        Phase::Failed,
        "the same annotation value does not retry twice"
    );
}

#[test]
fn the_promoted_revision_must_be_the_analysed_one() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 100}));
    w.tick(None);
    w.later(10);
    let d = w.tick(Some(Checks::Passed));
    assert_eq!(d.desired.promote_primary.as_deref(), Some("r2"));
    // The copy did not happen (say the write failed), and meanwhile the target moved on: start over
    // instead of promoting an unanalysed revision.
    w.o.primary.revision = Some("r1".into());
    w.o.target.revision = "r3".into();
    w.later(1);
    let d = w.tick(None);
    assert_eq!(d.desired.promote_primary, None);
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(w.o.status.last_applied_spec.as_deref(), Some("r3"));
}

/// Fewer writes: a canary that scales up within an interval of its new revision is held quietly (no status
/// change, no event for each stage of its Deployment's rollout, each of which cost a status write and an
/// event); one that takes longer is held as before, saying why.
#[test]
fn a_quick_scale_up_is_held_without_writes_and_a_slow_one_says_so() {
    let mut w = World::new(spec(json!({"interval": "10s", "stepWeight": 10})));
    w.initialize();
    w.o.target.revision = "r2".into();
    w.o.target.ready =
        Readiness::NotReady("waiting for the Deployment controller to see the latest spec".into());
    w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing);
    let (status, events) = (w.o.status.clone(), w.events.len());
    for why in [
        "0 of 1 replicas updated",
        "1 old replicas pending termination",
    ] {
        w.later(1);
        w.o.target.ready = Readiness::NotReady(why.into());
        let d = w.tick(None);
        assert_eq!(w.o.status, status, "nothing to write while it scales up");
        assert_eq!(w.events.len(), events, "{:?}", w.reasons());
        assert!(
            d.requeue_after <= Duration::from_secs(5),
            "{:?}",
            d.requeue_after
        );
    }
    w.later(1);
    w.o.target.ready = Readiness::Ready;
    w.tick(None);
    assert_eq!(w.o.status.canary_weight, 10);
    assert_eq!(
        w.reasons()[events..],
        [Reason::CanaryReady, Reason::WeightAdvanced]
    );

    // Slow: past one interval since the new revision, the hold is said once, with one event; its progress
    // reaches the status at most once an interval, without an event.
    let mut w = World::new(spec(json!({"interval": "10s", "stepWeight": 10})));
    w.o.spec.progress_deadline_seconds = Some(15);
    w.initialize();
    w.o.target.revision = "r2".into();
    w.o.target.ready = Readiness::NotReady("0 of 3 updated replicas available".into());
    w.tick(None);
    let events = w.events.len();
    w.later(5);
    w.tick(None);
    assert_eq!(w.events.len(), events);
    w.later(5);
    w.tick(None);
    assert_eq!(w.reasons()[events..], [Reason::Holding]);
    assert!(
        w.condition("Ready")
            .1
            .contains("0 of 3 updated replicas available")
    );
    w.later(1);
    w.tick(None);
    assert_eq!(w.events.len(), events + 1, "the same stage is said once");
    let status = w.o.status.clone();
    w.o.target.ready = Readiness::NotReady("1 of 3 updated replicas available".into());
    w.later(1);
    let d = w.tick(None);
    assert_eq!(w.o.status, status, "progress within the interval: no write");
    assert!(d.requeue_after <= Duration::from_secs(8), "{d:?}");
    w.later(8);
    w.tick(None);
    assert!(
        w.condition("Ready")
            .1
            .contains("1 of 3 updated replicas available"),
        "progress is reported at the interval's end"
    );
    assert_eq!(w.events.len(), events + 1, "{:?}", w.reasons());
    // The progress deadline (15 s) counts from the last progress reported (at 20 s), not from the hold's
    // start (at 10 s).
    w.later(9);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing);
    w.later(7);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Failed);
}

/// The primary's update at promotion, likewise.
#[test]
fn a_quick_primary_update_is_held_without_writes() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 25, "maxWeight": 50}));
    w.run(10, Checks::Passed, &[Phase::Promoting]);
    let (status, events) = (w.o.status.clone(), w.events.len());
    for why in [
        "waiting for the Deployment controller to see the latest spec",
        "0 of 1 replicas updated",
    ] {
        w.o.primary.ready = Readiness::NotReady(why.into());
        w.later(1);
        w.tick(None);
        assert_eq!(
            w.o.status, status,
            "nothing to write while the primary rolls out"
        );
        assert_eq!(w.events.len(), events, "{:?}", w.reasons());
    }
    w.o.primary.ready = Readiness::Ready;
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert!(
        !w.reasons()[events..].contains(&Reason::Holding),
        "{:?}",
        w.reasons()
    );
}

/// A new revision seen during a promotion whose primary is slow: the hold is said once, and its progress
/// deadline still counts (the tick's word of the new revision does not restart it).
#[test]
fn a_slow_primary_with_a_new_revision_waiting_is_held_once_and_rolled_back_at_the_deadline() {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 25, "maxWeight": 50}));
    w.o.spec.progress_deadline_seconds = Some(30);
    w.run(10, Checks::Passed, &[Phase::Promoting]);
    w.o.primary.ready = Readiness::NotReady("0 of 1 replicas updated".into());
    w.o.target.revision = "r3".into();
    let events = w.events.len();
    let mut failed_at = None;
    for t in 1..=8 {
        w.later(10);
        w.tick(None);
        if w.phase() == Phase::Failed {
            failed_at = Some(t * 10);
            break;
        }
    }
    let holding = w.reasons()[events..]
        .iter()
        .filter(|r| **r == Reason::Holding)
        .count();
    assert_eq!(holding, 1, "{:?}", w.reasons());
    // Said at 10 s (one interval into the phase), past the 30 s deadline at 40 s.
    assert_eq!(failed_at, Some(40), "{:?}", w.reasons());
}
