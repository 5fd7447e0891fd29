//! Revisions that come back (issue "roll forward in git", its two rules for the core): a target returned to
//! the revision the primary runs is not analysed; a revision that failed is held when it comes back, until
//! serin.dev/retry or a change of the analysis.

use serde_json::json;

use super::*;
use crate::api::Phase;
use crate::decision::*;

/// r2 analysed and rolled back (threshold 1); the primary still on r1.
fn rolled_back() -> World {
    let mut w = World::progressing(json!({"interval": "10s", "stepWeight": 10, "threshold": 1}));
    w.tick(None);
    w.later(10);
    w.tick(Some(failed(
        "request-success-rate 71.2% is below the minimum 99%",
    )));
    assert_eq!(w.phase(), Phase::Failed);
    w.tick(None);
    w
}

#[test]
fn a_target_back_at_the_promoted_revision_is_not_analysed() {
    let mut w = rolled_back();
    let (weights, checks) = (w.weights.clone(), w.asked_for_checks);
    w.events.clear();
    // git reverted to what the primary runs (a roll forward, by hand or by Serin).
    w.o.target.revision = "r1".into();
    w.later(10);
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Succeeded);
    assert_eq!(w.reasons(), vec![Reason::BackAtPromoted], "{:?}", w.events);
    assert!(w.events[0].message.contains("r1"), "{:?}", w.events);
    assert_eq!(
        d.desired.canary_scale,
        Scale::Zero,
        "the target stays scaled down"
    );
    assert_eq!(w.o.status.last_applied_spec.as_deref(), Some("r1"));
    // Nothing moves: no traffic, no checks, no primary write, and nothing more said.
    for _ in 0..3 {
        w.later(10);
        w.tick(None);
    }
    assert_eq!((w.weights.clone(), w.asked_for_checks), (weights, checks));
    assert_eq!(w.primary_revision_writes, 0);
    assert_eq!(w.events.len(), 1);
}

#[test]
fn a_failed_revision_that_comes_back_is_held_until_a_retry() {
    let mut w = rolled_back();
    w.o.target.revision = "r1".into();
    w.later(10);
    w.tick(None);
    let (weights, checks) = (w.weights.clone(), w.asked_for_checks);
    w.events.clear();
    // Image automation (or a revert of the revert) brings r2 back.
    w.o.target.revision = "r2".into();
    w.later(10);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Failed);
    assert_eq!(
        w.reasons(),
        vec![Reason::FailedRevisionHeld],
        "{:?}",
        w.events
    );
    assert!(
        w.events[0].message.contains("serin.dev/retry"),
        "{:?}",
        w.events
    );
    for _ in 0..3 {
        w.later(10);
        w.tick(None);
    }
    assert_eq!(
        (w.weights.clone(), w.asked_for_checks),
        (weights, checks),
        "held: nothing analysed"
    );
    assert_eq!(w.events.len(), 1, "said once");
    // A retry analyses it again.
    w.o.retry = Some("1".into());
    w.later(10);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing);
    assert!(w.reasons().contains(&Reason::Retrying), "{:?}", w.events);
}

#[test]
fn a_failed_revision_is_analysed_again_once_the_analysis_changes() {
    let mut w = rolled_back();
    w.o.target.revision = "r1".into();
    w.later(10);
    w.tick(None);
    w.o.target.revision = "r2".into();
    w.later(10);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Failed);
    // The team loosens the check that failed it: a new analysis, a new chance.
    w.o.spec.analysis.as_mut().unwrap().threshold = 3;
    w.later(10);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing);
    assert!(w.reasons().contains(&Reason::NewRevision), "{:?}", w.events);
}

#[test]
fn a_new_revision_after_a_failed_one_is_analysed_as_usual() {
    let mut w = rolled_back();
    w.o.target.revision = "r3".into();
    w.later(10);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing);
}
