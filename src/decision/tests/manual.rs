//! Manual control by annotation, tick by tick: promote, abort, pause.

use serde_json::json;

use super::*;
use crate::api::Phase;
use crate::decision::*;

fn analysis() -> serde_json::Value {
    json!({"interval": "10s", "stepWeight": 10, "threshold": 3})
}

#[test]
fn promote_skips_the_remaining_steps() {
    let mut w = World::progressing(analysis());
    w.tick(None);
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.status.canary_weight, 20);
    w.o.manual.promote = Some("2026-11-24T10:00:00Z".into());
    // No interval to wait for: the next reconcile acts.
    w.later(1);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Promoting);
    assert!(w.reasons().contains(&Reason::ManualPromotion));
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.o.primary.revision.as_deref(), Some("r2"));
    assert_eq!(
        w.o.status
            .manual
            .as_ref()
            .and_then(|m| m.promote.as_deref()),
        Some("2026-11-24T10:00:00Z")
    );
}

#[test]
fn promote_is_refused_while_checks_fail_unless_forced() {
    let mut w = World::progressing(analysis());
    w.tick(None);
    w.later(10);
    w.tick_round(Some(CheckRound {
        verdict: failed("request-success-rate 80 < 99"),
        results: vec![crate::api::CheckStatus {
            name: "request-success-rate".into(),
            value: Some(80.0),
            verdict: crate::api::CheckVerdict::Failed,
            message: Some("request-success-rate 80 < 99".into()),
            ..Default::default()
        }],
        evidence: vec![],
    }));
    assert_eq!(w.o.status.failed_checks, 1);
    w.o.manual.promote = Some("1".into());
    w.later(1);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing);
    let refused = w.events.last().unwrap();
    assert_eq!(refused.reason, Reason::ManualRefused);
    assert!(
        refused.message.contains("request-success-rate"),
        "{}",
        refused.message
    );
    // The same value is not tried again.
    w.later(1);
    let d = w.tick(None);
    assert!(d.events.is_empty());
    w.o.manual.promote = Some("force-2".into());
    w.later(1);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Promoting);
}

#[test]
fn abort_rolls_back_at_once() {
    let mut w = World::progressing(analysis());
    w.tick(None);
    w.later(10);
    w.tick(Some(Checks::Passed));
    w.o.manual.abort = Some("now".into());
    w.later(1);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Failed);
    assert_eq!(w.weights.last(), Some(&0));
    assert!(w.reasons().contains(&Reason::ManualAbort));
    assert_eq!(w.post_rollouts, [Phase::Failed]);
    assert!(
        w.notices
            .iter()
            .any(|n| n.message == "Canary aborted by hand, rolling back.")
    );
}

#[test]
fn a_value_set_while_nothing_is_analysed_is_refused_and_not_kept_for_the_next_revision() {
    let mut w = World::new(spec(analysis()));
    w.initialize();
    w.o.manual.promote = Some("x".into());
    w.o.manual.abort = Some("y".into());
    w.later(1);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Initialized);
    assert_eq!(
        w.reasons()
            .iter()
            .filter(|r| **r == Reason::ManualRefused)
            .count(),
        2
    );
    w.o.target.revision = "r2".into();
    w.later(1);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing);
    w.tick(None);
    assert_eq!(w.o.status.canary_weight, 10);
}

#[test]
fn pause_holds_the_weight_while_the_checks_go_on_and_resume_continues() {
    let mut w = World::progressing(analysis());
    w.tick(None);
    w.o.manual.pause = true;
    for _ in 0..3 {
        w.later(10);
        w.tick(Some(Checks::Passed));
        assert_eq!(w.o.status.canary_weight, 10);
    }
    assert_eq!(w.asked_for_checks, 3);
    assert!(w.reasons().contains(&Reason::Paused));
    // Failing checks still count while paused.
    w.later(10);
    w.tick(Some(failed("request-duration 900 > 500")));
    assert_eq!(w.o.status.failed_checks, 1);
    w.o.manual.pause = false;
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert!(w.reasons().contains(&Reason::Resumed));
    assert_eq!(w.o.status.canary_weight, 20);
    assert_eq!(w.o.status.manual, None);
}
