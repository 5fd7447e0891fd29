use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

const FILE: &str = r#"
apiVersion: serin.dev/v1beta1
kind: MetricTemplate
metadata:
  name: errors
spec:
  provider: {type: prometheus}
  query: sum(rate(x[1m]))
  counts: {total: "sum(t)", bad: "sum(b)"}
---
apiVersion: v1
kind: Service
metadata: {name: podinfo}
---
apiVersion: serin.dev/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: shop}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 1m
    stepWeight: 10
    metrics:
      - name: request-success-rate
        thresholdRange: {min: 99}
      - name: request-duration
        thresholdRange: {max: 500}
        compareToPrimary: {tolerance: 5}
      - name: latency-p99
        compareToPrimary: {}
        templateRef: {name: errors}
      - name: saturation
        query: sum(cpu)
        thresholdRange: {max: 80}
"#;

#[test]
fn a_file_gives_its_canary_and_templates_in_the_canarys_namespace() {
    let (canary, templates) = from_yaml(FILE, None).unwrap();
    assert_eq!(canary.name_any(), "podinfo");
    assert_eq!(templates.len(), 1);
    assert_eq!(templates[0].namespace().as_deref(), Some("shop"));
}

#[test]
fn a_file_without_the_canary_asked_for_says_what_it_has() {
    assert_eq!(
        from_yaml(FILE, Some("other")).unwrap_err(),
        "no Canary named other in the file (it has podinfo)"
    );
    let two = format!(
        "{FILE}\n---\n{}",
        FILE.replace("name: podinfo, namespace", "name: shop, namespace")
    );
    let err = from_yaml(&two, None).unwrap_err();
    assert!(
        err.starts_with("2 Canaries in the file (podinfo, shop)"),
        "{err}"
    );
    assert_eq!(
        from_yaml("kind: Service\n", None).unwrap_err(),
        "no Canary in the file"
    );
    let broken = FILE.replace("stepWeight: 10", "stepWeight: ten");
    let err = from_yaml(&broken, None).unwrap_err();
    assert!(err.starts_with("document 3 (Canary)"), "{err}");
}

#[test]
fn times_are_rfc_3339_or_a_duration_ago() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    assert_eq!(
        parse_time("2027-01-15T08:00:00Z", now).unwrap(),
        1_800_000_000.0
    );
    assert_eq!(parse_time("90m", now).unwrap(), 1_800_000_000.0 - 5400.0);
    assert_eq!(parse_time("0s", now).unwrap(), 1_800_000_000.0);
    let err = parse_time("yesterday", now).unwrap_err();
    assert!(err.contains("neither an RFC 3339 time"), "{err}");
    assert!(parse_time("1h", SystemTime::now()).is_ok());
}

#[test]
fn each_judge_checks_what_it_can() {
    let (canary, _) = from_yaml(FILE, None).unwrap();
    let (fixed, shown) = fixed_thresholds(&canary.spec);
    let metrics = &fixed.analysis.as_ref().unwrap().metrics;
    // The compared-only template has no threshold: the fixed thresholds skip it.
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["request-success-rate", "request-duration", "saturation"]
    );
    assert!(metrics.iter().all(|m| m.compare_to_primary.is_none()));
    assert_eq!(
        shown,
        [
            "request-success-rate: at least 99",
            "request-duration: at most 500",
            "latency-p99: not checked (no threshold)",
            "saturation: at most 80"
        ]
    );

    // promoteWhenProven needs a compared metric: the fixed thresholds drop it; a replay always analyses.
    let mut eager = canary.spec.clone();
    eager.analysis.as_mut().unwrap().promote_when_proven = true;
    eager.skip_analysis = true;
    let (fixed, _) = fixed_thresholds(&eager);
    assert!(!fixed.analysis.as_ref().unwrap().promote_when_proven);
    assert!(!fixed.skip_analysis);

    let comparable = |m: &Metric| m.query.is_none();
    let (judged, shown) = sequential_judge(&canary.spec, &comparable);
    let metrics = &judged.analysis.as_ref().unwrap().metrics;
    assert_eq!(metrics.len(), 4);
    // The Canary's own settings are kept; the thresholds of compared metrics are dropped.
    assert_eq!(
        metrics[1].compare_to_primary.as_ref().unwrap().tolerance,
        Some(5.0)
    );
    assert!(metrics[0].compare_to_primary.is_some() && metrics[0].threshold_range.is_none());
    assert!(metrics[3].compare_to_primary.is_none() && metrics[3].threshold_range.is_some());
    assert_eq!(
        shown[3],
        "saturation: as written (cannot be compared with the primary)"
    );
}

#[test]
fn what_can_be_compared_depends_on_the_provider_and_the_template() {
    let (canary, templates) = from_yaml(FILE, None).unwrap();
    let (store, mut writer) = reflector::store::<MetricTemplate>();
    for t in templates {
        writer.apply_watcher_event(&watcher::Event::Apply(t));
    }
    let (secrets, _) = reflector::store::<Secret>();
    let analyzer = Analyzer::new(
        store,
        secrets,
        "http://127.0.0.1:1".into(),
        Provider::GatewayApi,
        Duration::from_secs(1),
        Counter::default(),
    );
    let metrics = &canary.spec.analysis.as_ref().unwrap().metrics;
    let can = |i: usize, p: Provider| {
        let mut canary = canary.clone();
        canary.spec.provider = Some(p);
        analyzer.can_compare(&canary, &metrics[i])
    };
    assert!(can(0, Provider::GatewayApi));
    assert!(can(1, Provider::GatewayApi));
    assert!(can(1, Provider::Nginx));
    assert!(can(2, Provider::GatewayApi));
    assert!(!can(3, Provider::GatewayApi));
}
