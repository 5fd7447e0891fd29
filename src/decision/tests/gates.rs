//! Flagger's webhooks tick by tick: gates, checks, rollback and post-rollout webhooks, and the alerts they
//! raise.

use serde_json::{Value, json};

use super::*;
use crate::api::analysis::{HookType, Severity};
use crate::api::{HookResult, Phase};
use crate::decision::*;

fn with_hooks(mut analysis: Value, hooks: Value) -> Value {
    analysis["webhooks"] = hooks;
    analysis
}

fn hook(name: &str, kind: &str) -> Value {
    json!({"name": name, "type": kind, "url": format!("http://hooks.test/{name}")})
}

/// A world initialized at r1 whose target then changed to r2 (the tick that sees it is left to the test).
fn initialized(analysis: Value) -> World {
    let mut w = World::new(spec(analysis));
    w.initialize();
    w.o.target.revision = "r2".into();
    w
}

fn warn_alerts(w: &World) -> Vec<String> {
    w.notices
        .iter()
        .filter(|n| n.severity == Severity::Warn)
        .map(|n| n.message.clone())
        .collect()
}

#[test]
fn a_closed_confirm_rollout_gate_holds_the_revision_in_waiting_without_scaling_the_canary() {
    let analysis = with_hooks(
        json!({"interval": "10s", "stepWeight": 50}),
        json!([hook("approve", "confirm-rollout")]),
    );
    let mut w = initialized(analysis);
    w.hook_answers.insert("approve".into(), false);
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Waiting);
    assert_ne!(d.desired.canary_scale, Scale::Up);
    assert_eq!(w.reasons().last(), Some(&Reason::GateClosed));
    assert_eq!(warn_alerts(&w), ["Canary is waiting for approval."]);
    let status = &w.o.status.webhooks[0];
    assert_eq!(
        (status.name.as_str(), status.hook_type, status.result),
        ("approve", HookType::ConfirmRollout, HookResult::Failed)
    );
    assert_eq!(status.message, "HTTP 403: closed");

    // Asked again once an interval, not before; the alert is not repeated.
    let asked = w.asked_for_hooks.len();
    w.later(5);
    w.tick(None);
    assert_eq!(w.asked_for_hooks.len(), asked);
    w.later(5);
    let d = w.tick(None);
    assert_eq!(w.asked_for_hooks.len(), asked + 1);
    assert_eq!(w.phase(), Phase::Waiting);
    assert_ne!(d.desired.canary_scale, Scale::Up);
    assert_eq!(warn_alerts(&w).len(), 1);

    w.hook_answers.insert("approve".into(), true);
    w.later(10);
    let d = w.tick(None);
    assert_eq!(w.phase(), Phase::Progressing);
    assert_eq!(d.desired.canary_scale, Scale::Up);
    assert!(w.reasons().contains(&Reason::GateOpened));
    assert_eq!(w.o.status.last_applied_spec.as_deref(), Some("r2"));
    assert!(
        w.notices.iter().any(|n| n.message
            == "New revision detected, progressing canary analysis."
            && n.settings)
    );
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert_eq!(w.weights, vec![0, 50, 100, 0]);
}

#[test]
fn mute_alert_silences_a_gates_alert_but_not_its_event() {
    let mut h = hook("approve", "confirm-rollout");
    h["muteAlert"] = json!(true);
    let mut w = initialized(with_hooks(
        json!({"interval": "10s", "stepWeight": 50}),
        json!([h]),
    ));
    w.hook_answers.insert("approve".into(), false);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Waiting);
    assert!(warn_alerts(&w).is_empty());
    assert!(w.reasons().contains(&Reason::GateClosed));
}

#[test]
fn a_revision_reverted_while_waiting_needs_no_approval() {
    let mut w = initialized(with_hooks(
        json!({"interval": "10s", "stepWeight": 50}),
        json!([hook("approve", "confirm-rollout")]),
    ));
    w.hook_answers.insert("approve".into(), false);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Waiting);
    w.o.target.revision = "r1".into();
    w.events.clear();
    w.later(10);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Succeeded);
    // Said, as from any other phase.
    assert_eq!(w.reasons(), vec![Reason::BackAtPromoted], "{:?}", w.events);
}

#[test]
fn a_failing_pre_rollout_webhook_is_a_failed_check_and_is_asked_again_until_it_passes() {
    let analysis = with_hooks(
        json!({"interval": "10s", "stepWeight": 50, "threshold": 3}),
        json!([hook("db-migrated", "pre-rollout")]),
    );
    let mut w = World::progressing(analysis);
    w.hook_answers.insert("db-migrated".into(), false);
    w.tick(None);
    assert_eq!(w.o.status.failed_checks, 1);
    assert_eq!(w.o.status.canary_weight, 0);
    assert!(w.reasons().contains(&Reason::CheckFailed));
    w.later(10);
    w.tick(None);
    assert_eq!(w.o.status.failed_checks, 2);
    w.hook_answers.insert("db-migrated".into(), true);
    w.later(10);
    w.tick(None);
    assert_eq!(w.o.status.canary_weight, 50);
    // Passed once, it is not asked again in this analysis.
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(
        w.asked_for_hooks
            .iter()
            .filter(|k| **k == HookType::PreRollout)
            .count(),
        3
    );
    assert_eq!(w.o.status.canary_weight, 100);
}

#[test]
fn pre_rollout_failures_at_the_threshold_roll_back_with_the_error_alert() {
    let analysis = with_hooks(
        json!({"interval": "10s", "stepWeight": 50, "threshold": 2}),
        json!([hook("smoke", "pre-rollout")]),
    );
    let mut w = World::progressing(analysis);
    w.hook_answers.insert("smoke".into(), false);
    w.tick(None);
    w.later(10);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Failed);
    let alert = w
        .notices
        .iter()
        .find(|n| n.severity == Severity::Error)
        .expect("an error alert");
    assert_eq!(alert.message, "Failed checks threshold reached 2");
    assert_eq!(
        alert.details[0],
        (
            "Failed check".to_string(),
            "pre-rollout webhook smoke failed: HTTP 403: closed".to_string()
        )
    );
    assert_eq!(w.post_rollouts, [Phase::Failed]);
}

#[test]
fn a_failing_rollout_webhook_fails_the_step_before_the_metric_checks_run() {
    let analysis = with_hooks(
        json!({"interval": "10s", "stepWeight": 50, "threshold": 5}),
        json!([hook("load", "rollout")]),
    );
    let mut w = World::progressing(analysis);
    w.tick(None);
    assert_eq!(w.o.status.canary_weight, 50);
    w.hook_answers.insert("load".into(), false);
    w.later(10);
    let asked = w.asked_for_checks;
    w.tick(None);
    assert_eq!(
        w.asked_for_checks, asked,
        "no checks after a failed rollout webhook"
    );
    assert_eq!(w.o.status.failed_checks, 1);
    assert_eq!(w.o.status.canary_weight, 50);
    w.hook_answers.insert("load".into(), true);
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.status.canary_weight, 100);
}

#[test]
fn a_closed_traffic_increase_gate_holds_the_weight_while_the_checks_go_on() {
    let analysis = with_hooks(
        json!({"interval": "10s", "stepWeight": 25}),
        json!([hook("traffic", "confirm-traffic-increase")]),
    );
    let mut w = World::progressing(analysis);
    w.tick(None);
    assert_eq!(w.o.status.canary_weight, 25);
    w.hook_answers.insert("traffic".into(), false);
    for _ in 0..3 {
        w.later(10);
        w.tick(Some(Checks::Passed));
        assert_eq!(w.o.status.canary_weight, 25);
        assert_eq!(w.phase(), Phase::Progressing);
    }
    assert_eq!(w.asked_for_checks, 3);
    assert_eq!(
        warn_alerts(&w),
        ["Canary traffic increase is waiting for approval."],
        "once per wait"
    );
    w.hook_answers.insert("traffic".into(), true);
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.status.canary_weight, 50);
}

#[test]
fn a_closed_promotion_gate_waits_in_waiting_promotion_and_failing_checks_still_roll_back() {
    let analysis = with_hooks(
        json!({"interval": "10s", "stepWeight": 50, "threshold": 2}),
        json!([hook("promote", "confirm-promotion")]),
    );
    let mut w = World::progressing(analysis);
    w.hook_answers.insert("promote".into(), false);
    w.run(10, Checks::Passed, &[Phase::WaitingPromotion]);
    assert_eq!(w.o.status.canary_weight, 100);
    assert_eq!(
        warn_alerts(&w),
        ["Canary promotion is waiting for approval."]
    );
    // The checks keep running, and still count.
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.phase(), Phase::WaitingPromotion);
    w.later(10);
    w.tick(Some(failed("request-success-rate 80 < 99")));
    assert_eq!(w.phase(), Phase::WaitingPromotion);
    w.later(10);
    w.tick(Some(failed("request-success-rate 80 < 99")));
    assert_eq!(w.phase(), Phase::Failed);
    assert_eq!(w.o.primary.revision.as_deref(), Some("r1"));
}

#[test]
fn an_opened_promotion_gate_promotes() {
    let analysis = with_hooks(
        json!({"interval": "10s", "stepWeight": 50}),
        json!([hook("promote", "confirm-promotion")]),
    );
    let mut w = World::progressing(analysis);
    w.hook_answers.insert("promote".into(), false);
    w.run(10, Checks::Passed, &[Phase::WaitingPromotion]);
    w.hook_answers.insert("promote".into(), true);
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
    assert!(w.reasons().contains(&Reason::GateOpened));
    assert_eq!(w.o.primary.revision.as_deref(), Some("r2"));
    assert_eq!(w.post_rollouts, [Phase::Succeeded]);
    assert!(
        w.notices
            .iter()
            .any(|n| n.message == "Canary analysis completed successfully, promotion finished.")
    );
}

#[test]
fn blue_green_asks_for_promotion_before_routing_all_traffic_to_the_canary() {
    let analysis = with_hooks(
        json!({"interval": "10s", "iterations": 2}),
        json!([hook("promote", "confirm-promotion")]),
    );
    let mut w = World::progressing(analysis);
    w.hook_answers.insert("promote".into(), false);
    w.run(10, Checks::Passed, &[Phase::WaitingPromotion]);
    assert_eq!((w.o.status.iterations, w.o.status.canary_weight), (2, 0));
    w.hook_answers.insert("promote".into(), true);
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.status.canary_weight, 100);
    w.run(10, Checks::Passed, &[Phase::Succeeded]);
}

#[test]
fn a_rollback_webhook_that_passes_rolls_back_in_progressing_and_in_waiting() {
    let analysis = with_hooks(
        json!({"interval": "10s", "stepWeight": 20}),
        json!([hook("rollback", "rollback")]),
    );
    let mut w = World::progressing(analysis.clone());
    w.hook_answers.insert("rollback".into(), false);
    w.tick(None);
    w.later(10);
    w.tick(Some(Checks::Passed));
    assert_eq!(w.o.status.canary_weight, 40);
    w.hook_answers.insert("rollback".into(), true);
    w.later(10);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Failed);
    assert!(w.reasons().contains(&Reason::RollbackRequested));
    assert_eq!(warn_alerts(&w), ["Rolling back manual webhook invoked"]);
    assert_eq!(w.weights.last(), Some(&0));

    let gated = with_hooks(
        json!({"interval": "10s", "stepWeight": 20}),
        json!([
            hook("approve", "confirm-rollout"),
            hook("rollback", "rollback")
        ]),
    );
    let mut w = initialized(gated);
    w.hook_answers.insert("approve".into(), false);
    w.hook_answers.insert("rollback".into(), false);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Waiting);
    w.hook_answers.insert("rollback".into(), true);
    w.later(10);
    w.tick(None);
    assert_eq!(w.phase(), Phase::Failed);
}

#[test]
fn a_webhook_removed_from_the_spec_leaves_the_status() {
    let analysis = with_hooks(
        json!({"interval": "10s", "stepWeight": 50}),
        json!([hook("approve", "confirm-rollout")]),
    );
    let mut w = initialized(analysis);
    w.hook_answers.insert("approve".into(), false);
    w.tick(None);
    assert_eq!(w.o.status.webhooks.len(), 1);
    w.o.spec = spec(json!({"interval": "10s", "stepWeight": 50}));
    w.later(10);
    w.tick(None);
    assert!(w.o.status.webhooks.is_empty());
    assert_eq!(
        w.phase(),
        Phase::Progressing,
        "no gate left: the analysis starts"
    );
}

#[test]
fn flaggers_alerts_come_on_flaggers_occasions() {
    let mut w = World::new(spec(
        json!({"interval": "10s", "stepWeight": 50, "threshold": 1}),
    ));
    w.initialize();
    assert_eq!(
        w.notices[0].message,
        "New Deployment detected, initialization completed."
    );
    assert!(w.notices[0].settings);
    w.o.target.revision = "r2".into();
    w.tick(None);
    w.tick(None);
    w.later(10);
    w.tick(Some(failed("request-success-rate 80.00 < 99")));
    assert_eq!(w.phase(), Phase::Failed);
    let messages: Vec<(Severity, &str)> = w
        .notices
        .iter()
        .map(|n| (n.severity, n.message.as_str()))
        .collect();
    assert_eq!(
        messages,
        [
            (
                Severity::Info,
                "New Deployment detected, initialization completed."
            ),
            (
                Severity::Info,
                "New revision detected, progressing canary analysis."
            ),
            (Severity::Error, "Failed checks threshold reached 1"),
        ]
    );
    let rollback = &w.notices[2];
    assert_eq!(
        rollback.details,
        [
            (
                "Failed check".into(),
                "request-success-rate 80.00 < 99".into()
            ),
            ("Revision".into(), "r2".into()),
            ("Traffic".into(), "canary 50% / primary 50%".into()),
        ]
    );
}
