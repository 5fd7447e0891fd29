//! The sequential judge's verdicts (`compareToPrimary`): a proven regression rolls back at once, a canary
//! not yet proven good steps on but is never promoted, and maxDuration ends the wait with a rollback.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde_json::json;

use super::*;
use crate::api::Phase;
use crate::api::status::EvidenceStatus;
use crate::decision::*;
use crate::statistics::{RateEvidence, Verdict};

fn evidence(w: &World, verdict: Verdict, message: &str, since: Timestamp) -> EvidenceStatus {
    EvidenceStatus {
        name: "request-success-rate".into(),
        revision: w.o.target.revision.clone(),
        since: MicroTime(since),
        window_end: MicroTime(w.o.now),
        verdict,
        e_value: 1.0,
        fail_at: 100.0,
        canary_requests: 600,
        message: message.into(),
        errors: Some(RateEvidence::new(0.01)),
        latency: None,
    }
}

fn round(checks: Checks, evidence: Vec<EvidenceStatus>) -> Option<CheckRound> {
    Some(CheckRound {
        verdict: checks,
        results: vec![],
        evidence,
    })
}

/// The RolledBack event's message.
fn rolled_back(w: &World) -> String {
    w.events
        .iter()
        .find(|e| e.reason == Reason::RolledBack)
        .map(|e| e.message.clone())
        .expect("a RolledBack event")
}

fn unproven(message: &str) -> Checks {
    Checks::Unproven {
        message: message.into(),
    }
}

fn compared(extra: serde_json::Value) -> serde_json::Value {
    let mut analysis = json!({
        "interval": "1m", "stepWeight": 10, "maxWeight": 30, "threshold": 5,
        "metrics": [{"name": "request-success-rate", "compareToPrimary": {}}],
    });
    for (k, v) in extra.as_object().unwrap() {
        analysis[k] = v.clone();
    }
    analysis
}

#[test]
fn a_proven_regression_rolls_back_at_once_whatever_the_threshold() {
    let mut w = World::progressing(compared(json!({})));
    w.later(60);
    w.tick(None); // weight 0 -> 10, no checks
    w.later(60);
    let since = w.o.now;
    let e = evidence(&w, Verdict::Hold, "hold", since);
    w.tick_round(round(unproven("hold"), vec![e]));
    assert_eq!(w.o.status.canary_weight, 20);
    w.later(60);
    let e = evidence(&w, Verdict::Fail, "regression proven", since);
    w.tick_round(round(
        Checks::Regressed {
            message: "request-success-rate: regression proven".into(),
        },
        vec![e],
    ));
    assert_eq!(w.phase(), Phase::Failed, "threshold 5 does not delay it");
    assert_eq!(w.o.status.canary_weight, 0);
    assert_eq!(w.o.status.failed_checks, 0);
    assert!(w.reasons().contains(&Reason::Regressed));
    assert!(w.reasons().contains(&Reason::Evidence));
    let rolled_back = rolled_back(&w);
    assert!(
        rolled_back.contains("request-success-rate: regression proven"),
        "{rolled_back}"
    );
    assert_eq!(
        w.o.status.evidence[0].verdict,
        Verdict::Fail,
        "the evidence is kept for the record"
    );
}

#[test]
fn an_unproven_canary_steps_to_max_weight_then_holds_until_proven() {
    let mut w = World::progressing(compared(json!({})));
    w.later(60);
    w.tick(None);
    let since = w.o.now;
    for _ in 0..6 {
        w.later(60);
        let e = evidence(&w, Verdict::Hold, "not proven", since);
        w.tick_round(round(unproven("request-success-rate: not proven"), vec![e]));
    }
    assert_eq!(w.weights, vec![0, 10, 20, 30]);
    assert_eq!(w.phase(), Phase::Progressing, "never promoted unproven");
    assert!(
        w.o.status.conditions.iter().any(|c| c
            .message
            .as_deref()
            .unwrap_or("")
            .contains("Holding for evidence")),
        "{:?}",
        w.o.status.conditions
    );
    w.later(60);
    let e = evidence(&w, Verdict::Pass, "proven", since);
    w.tick_round(round(Checks::Passed, vec![e]));
    assert_eq!(w.phase(), Phase::Promoting);
}

#[test]
fn max_duration_without_proof_rolls_back_with_what_is_missing() {
    let mut w = World::progressing(compared(json!({"maxDuration": "10m"})));
    w.later(60);
    w.tick(None);
    let since = w.o.now;
    let missing =
        "request-success-rate: 900 canary requests, about 4100 more needed at the current rate";
    for _ in 0..9 {
        w.later(60);
        let e = evidence(&w, Verdict::Hold, missing, since);
        w.tick_round(round(unproven(missing), vec![e]));
        assert_eq!(w.phase(), Phase::Progressing);
    }
    w.later(60);
    let e = evidence(&w, Verdict::Hold, missing, since);
    w.tick_round(round(unproven(missing), vec![e]));
    assert_eq!(
        w.phase(),
        Phase::Failed,
        "10m after the first judged window"
    );
    let rolled_back = rolled_back(&w);
    assert!(
        rolled_back.contains("insufficient evidence after 10m (analysis.maxDuration): request-success-rate: 900 canary requests, about 4100 more needed"),
        "{rolled_back}"
    );
}

#[test]
fn promote_when_proven_promotes_before_max_weight() {
    let mut w = World::progressing(compared(json!({"promoteWhenProven": true})));
    w.later(60);
    w.tick(None);
    let since = w.o.now;
    w.later(60);
    let e = evidence(&w, Verdict::Hold, "hold", since);
    w.tick_round(round(unproven("hold"), vec![e]));
    assert_eq!(w.o.status.canary_weight, 20);
    w.later(60);
    let e = evidence(&w, Verdict::Pass, "proven", since);
    w.tick_round(round(Checks::Passed, vec![e]));
    assert_eq!(w.phase(), Phase::Promoting, "at weight 20 of 30");
}

#[test]
fn a_new_revision_clears_the_evidence() {
    let mut w = World::progressing(compared(json!({})));
    w.later(60);
    w.tick(None);
    w.later(60);
    let since = w.o.now;
    let e = evidence(&w, Verdict::Hold, "hold", since);
    w.tick_round(round(unproven("hold"), vec![e]));
    assert_eq!(w.o.status.evidence.len(), 1);
    w.o.target.revision = "r3".into();
    w.later(60);
    w.tick(None);
    assert!(w.o.status.evidence.is_empty());
}

#[test]
fn what_cannot_be_compared_is_refused_with_its_field() {
    let problems = |analysis: serde_json::Value, provider: &str| {
        let mut s = spec(analysis);
        s.provider = Some(serde_json::from_value(json!(provider)).unwrap());
        let defaults = ControllerDefaults {
            provider: crate::api::Provider::GatewayApi,
            min_interval: std::time::Duration::from_secs(1),
        };
        Settings::resolve(&s, &defaults)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.path)
            .collect::<Vec<_>>()
    };
    let inline = json!({"stepWeight": 10, "metrics": [
        {"name": "errors", "query": "sum(x)", "compareToPrimary": {}}]});
    assert_eq!(
        problems(inline, "gatewayapi"),
        vec!["spec.analysis.metrics[0].compareToPrimary"]
    );
    // Every provider's telemetry has a latency histogram (ingress-nginx's request time included).
    let latency = json!({"stepWeight": 10, "metrics": [
        {"name": "request-duration", "compareToPrimary": {}}]});
    for provider in ["nginx", "istio", "gatewayapi"] {
        assert!(problems(latency.clone(), provider).is_empty(), "{provider}");
    }
    let alone = json!({"stepWeight": 10, "promoteWhenProven": true, "metrics": [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}}]});
    assert_eq!(
        problems(alone, "gatewayapi"),
        vec!["spec.analysis.promoteWhenProven"]
    );
    let zero = compared(json!({"maxDuration": "0s"}));
    assert_eq!(
        problems(zero, "gatewayapi"),
        vec!["spec.analysis.maxDuration"]
    );
}
