//! Every view of `kubectl serin` from fixture Canaries, against its snapshot (src/plugin/snapshots/;
//! `cargo insta review` after an intended change).

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::view::{self, EventLine, Related, WorkloadLine};
use crate::api::Canary;
use crate::vocabulary::{Traffic, Weights};

fn now() -> Timestamp {
    "2026-11-25T10:00:00Z".parse().unwrap()
}

fn at(seconds_ago: i64) -> Timestamp {
    now() - k8s_openapi::jiff::SignedDuration::from_secs(seconds_ago)
}

fn canary(name: &str, spec: Value, status: Value) -> Canary {
    let mut base = json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"provider": "gatewayapi", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898}, "analysis": {"interval": "1m", "threshold": 2, "stepWeight": 10, "maxWeight": 50,
                "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}},
                            {"name": "request-duration", "thresholdRange": {"max": 500}}]}},
        "status": status});
    merge(&mut base["spec"], spec);
    serde_json::from_value(base).expect("a fixture Canary")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn progressing() -> Canary {
    canary(
        "podinfo",
        json!({}),
        json!({"phase": "Progressing", "canaryWeight": 30, "failedChecks": 1,
            "lastTransitionTime": "2026-11-25T09:57:00Z", "lastStepTime": "2026-11-25T09:59:48.000000Z",
            "conditions": [{"type": "Ready", "status": "Unknown", "reason": "Progressing",
                "message": "New revision detected, progressing canary analysis."}],
            "checks": [
                {"name": "request-success-rate", "value": 99.62, "thresholdRange": {"min": 99.0}, "verdict": "Passed"},
                {"name": "request-duration", "value": 612.0, "thresholdRange": {"max": 500.0}, "verdict": "Failed",
                 "message": "request-duration 612ms > 500ms (max)"}]}),
    )
}

fn related() -> Related {
    Related {
        route: Some((
            "HTTPRoute podinfo".into(),
            Some(Traffic::Split(Weights {
                primary: 70,
                canary: 30,
            })),
        )),
        workloads: vec![
            WorkloadLine {
                role: "primary",
                kind: "Deployment".into(),
                name: "podinfo-primary".into(),
                image: "ghcr.io/stefanprodan/podinfo:6.0.0".into(),
                ready: 3,
                desired: 3,
            },
            WorkloadLine {
                role: "target",
                kind: "Deployment".into(),
                name: "podinfo".into(),
                image: "ghcr.io/stefanprodan/podinfo:6.0.1".into(),
                ready: 3,
                desired: 3,
            },
        ],
        events: vec![
            EventLine {
                at: at(180),
                reason: "Synced".into(),
                note: "New revision detected! Scaling up podinfo".into(),
                count: 1,
            },
            EventLine {
                at: at(60),
                reason: "Synced".into(),
                note: "Advance podinfo canary weight 30".into(),
                count: 1,
            },
            EventLine {
                at: at(12),
                reason: "CheckFailed".into(),
                note: "request-duration 612ms > 500ms (max)".into(),
                count: 2,
            },
        ],
    }
}

#[test]
fn progressing_with_a_failing_check() {
    insta::assert_snapshot!(view::detail(&progressing(), &related(), now()));
}

#[test]
fn holding_on_no_data_with_the_judge() {
    let c = canary(
        "web",
        json!({"analysis": {"metrics": [{"name": "request-success-rate", "compareToPrimary": {}}]}}),
        json!({"phase": "Progressing", "canaryWeight": 10,
            "checks": [{"name": "request-success-rate", "verdict": "NoData",
                "message": "no data: is traffic reaching web-canary?"}],
            "evidence": [{"name": "request-success-rate", "revision": "5d1f", "since": "2026-11-25T09:58:00.000000Z",
                "windowEnd": "2026-11-25T09:59:55.000000Z", "verdict": "Hold", "eValue": 0.0, "failAt": 100.0,
                "canaryRequests": 0,
                "message": "request-success-rate: no canary requests yet: not proven either way"}]}),
    );
    let r = Related {
        route: Some((
            "HTTPRoute web".into(),
            Some(Traffic::Split(Weights {
                primary: 90,
                canary: 10,
            })),
        )),
        ..Default::default()
    };
    insta::assert_snapshot!(view::detail(&c, &r, now()));
}

#[test]
fn rolled_back_with_the_failing_value() {
    let c = canary(
        "podinfo",
        json!({}),
        json!({"phase": "Failed", "canaryWeight": 0, "failedChecks": 2, "lastTransitionTime": "2026-11-25T09:40:00Z",
            "conditions": [{"type": "Ready", "status": "False", "reason": "Failed",
                "message": "Canary analysis failed: request-success-rate 80.12% < 99% (min)"}],
            "checks": [{"name": "request-success-rate", "value": 80.12, "thresholdRange": {"min": 99.0}, "verdict": "Failed"}]}),
    );
    let r = Related {
        route: Some((
            "HTTPRoute podinfo".into(),
            Some(Traffic::Split(Weights {
                primary: 100,
                canary: 0,
            })),
        )),
        ..Default::default()
    };
    insta::assert_snapshot!(view::detail(&c, &r, now()));
}

#[test]
fn ab_testing_and_blue_green_count_iterations() {
    let ab = canary(
        "checkout",
        json!({"provider": "istio", "analysis": {"iterations": 10, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}}),
        json!({"phase": "Progressing", "iterations": 4}),
    );
    let r = Related {
        route: Some(("VirtualService checkout".into(), Some(Traffic::Matched))),
        ..Default::default()
    };
    let bg = canary(
        "api",
        json!({"provider": "kubernetes", "analysis": {"iterations": 5, "stepWeight": null, "maxWeight": null}}),
        json!({"phase": "Progressing", "iterations": 2, "manual": {"paused": true}}),
    );
    insta::assert_snapshot!(format!(
        "{}\n{}",
        view::detail(&ab, &r, now()),
        view::detail(&bg, &Related::default(), now())
    ));
}

#[test]
fn the_list() {
    let mut other = progressing();
    other.metadata.name = Some("cart".into());
    other.metadata.namespace = Some("store".into());
    let done = canary(
        "api",
        json!({}),
        json!({"phase": "Succeeded", "lastTransitionTime": "2026-11-24T10:00:00Z"}),
    );
    let failed = canary(
        "web",
        json!({}),
        json!({"phase": "Failed", "failedChecks": 2, "lastTransitionTime": "2026-11-25T09:59:00Z"}),
    );
    insta::assert_snapshot!(view::table(
        &[progressing(), other, done, failed],
        true,
        now()
    ));
}

#[test]
fn the_status_line() {
    assert_eq!(
        view::status_line(&progressing()),
        "Progressing weight 30% failed checks 1; request-success-rate 99.62 (Passed); request-duration 612 (Failed)"
    );
}

#[test]
fn the_weight_bar_marks_the_promotion_weight() {
    assert_eq!(view::weight_bar(0, 50, 10), "░░░░|░░░░░");
    assert_eq!(view::weight_bar(30, 50, 10), "███░|░░░░░");
    assert_eq!(view::weight_bar(50, 50, 10), "█████░░░░░");
    assert_eq!(view::weight_bar(100, 100, 10), "██████████");
}

#[test]
fn lint_names_the_field_and_accepts_a_sound_canary() {
    let defaults = crate::decision::ControllerDefaults {
        provider: crate::api::Provider::GatewayApi,
        min_interval: std::time::Duration::from_secs(10),
    };
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/gatewayapi/canary.yaml"
    ))
    .unwrap();
    assert_eq!(
        super::lint_text(&text, &defaults),
        vec![Ok("podinfo".to_string())]
    );
    let examples = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"));
    for dir in std::fs::read_dir(examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
    {
        let canary = std::fs::read_to_string(dir.join("canary.yaml")).unwrap();
        assert_eq!(
            super::lint_text(&canary, &defaults),
            vec![Ok("podinfo".to_string())],
            "{}",
            dir.display()
        );
    }
    let bad = text.replace("interval: 1m\n    # Failed", "interval: 2s\n    # Failed");
    let found = super::lint_text(&bad, &defaults);
    assert!(
        matches!(&found[..], [Err(e)] if e.contains("analysis.interval") && e.contains("10s")),
        "{found:?}"
    );
    let flagger = text.replace("serin.dev/v1beta1", "flagger.app/v1beta1");
    let found = super::lint_text(&flagger, &defaults);
    assert!(
        matches!(&found[..], [Err(e)] if e.contains("kubectl serin convert")),
        "{found:?}"
    );
}
