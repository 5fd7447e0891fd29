//! Canary analysis end to end: the `serin` binary against the local cluster, its real Prometheus scraping
//! the traffic simulator, whose pods answer as their annotations say (error rate, latency). Each test runs
//! its own controller in its own namespace. (Prometheus taken away mid-analysis is in
//! analysis_outage.rs, a test binary of its own, so no other test runs while it is down.)

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::runtime::reflector;
use serde_json::{Value, json};
use serin::api::{Canary, CanaryStatus, CheckStatus, CheckVerdict, MetricTemplate, Phase};
use serin::decision::Checks;
use serin::metrics::{Analyzer, CheckRunner};
use serin_e2e::apps::{deployment as app, service, wait_rolled_out};
use serin_e2e::podinfo::{
    annotated, deployment, image_of, recording_weights, route_weight, setup, wait_phase,
    weights_recorded_until,
};
use serin_e2e::{
    SerinProcess, apply, apply_httproute, client, cluster, event_notes, namespace,
    prometheus_value, wait_for,
};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// The built-in checks as a Flagger user writes them, over a 10s window (Prometheus scrapes every second).
fn builtin_checks() -> Value {
    json!([
        {"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 99}},
        {"name": "request-duration", "interval": "10s", "thresholdRange": {"max": 500}}
    ])
}

fn behaviour(error_rate: f64, latency_ms: u32) -> Value {
    json!({"trafficsim.serin.dev/error-rate": error_rate.to_string(),
        "trafficsim.serin.dev/latency-ms": latency_ms.to_string()})
}

/// A Canary with `analysis`, initialized by its own controller; then podinfo 2.0.0 behaving as `pods`
/// say is rolled out. `before_rollout` runs once the Canary is initialized.
async fn roll_out<F, Fut>(
    prefix: &str,
    analysis: Value,
    extra: Value,
    pods: Value,
    before_rollout: F,
) -> (Client, String, SerinProcess)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (client, ns) = setup(prefix, analysis, extra).await;
    let serin = SerinProcess::start(SERIN, &ns, "a").await;
    wait_phase(&client, &ns, Phase::Initialized, Duration::from_secs(30)).await;
    before_rollout(client.clone(), ns.clone()).await;
    apply::<Deployment>(
        &client,
        &ns,
        annotated(deployment("podinfo:2.0.0", json!({})), pods),
    )
    .await;
    (client, ns, serin)
}

/// `extra` for a Canary through `provider`: gatewayapi (the harness's default) or istio (a VirtualService;
/// the built-in checks then read Istio's series).
fn on(provider: &str, mut extra: Value) -> Value {
    if provider == "istio" {
        extra["provider"] = json!("istio");
        extra["service"] = json!({"port": 9898});
    }
    extra
}

fn check<'a>(status: &'a CanaryStatus, name: &str) -> &'a CheckStatus {
    status
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} in the status' checks: {:?}", status.checks))
}

fn ready_message(status: &CanaryStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.message.clone())
        .unwrap_or_default()
}

/// After a rollback: the route at 100/0, the primary untouched on 1.0.0, the canary at zero replicas.
async fn assert_rolled_back(client: &Client, ns: &str) {
    assert_eq!(
        route_weight(client, ns).await,
        Some(0),
        "the route is back at 100/0"
    );
    assert_eq!(
        image_of(client, ns, "podinfo-primary").await,
        ("podinfo:1.0.0".into(), 3),
        "the primary is untouched"
    );
    wait_for(
        "the canary scaled to zero",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            match image_of(client, ns, "podinfo").await.1 {
                0 => Ok(()),
                n => Err(format!("{n} replicas")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_good_image_is_promoted_on_its_metrics() {
    good_image("gatewayapi").await;
}

/// The same through a VirtualService, judged by Istio's series.
#[tokio::test]
async fn a_good_image_is_promoted_on_its_metrics_through_istio() {
    good_image("istio").await;
}

async fn good_image(provider: &str) {
    let analysis = json!({"interval": "2s", "stepWeight": 20, "maxWeight": 60, "threshold": 2, "metrics": builtin_checks()});
    // Recorded from before the update: Serin steps to 20 within tens of milliseconds of the canary's
    // readiness, and a recording started after the update missed the 0 under CI's load.
    let recording = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = recording.clone();
    let (client, ns, serin) = roll_out(
        &format!("analysis-good-{provider}"),
        analysis,
        on(provider, json!({})),
        behaviour(0.0, 20),
        |client, ns| async move {
            *slot.lock().unwrap() = Some(recording_weights(client, ns).await);
        },
    )
    .await;
    let recorded = recording.lock().unwrap().take().expect("recording started");
    let weights = weights_recorded_until(
        &client,
        &ns,
        recorded,
        Phase::Succeeded,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(weights, vec![0, 20, 40, 60, 0]);
    let rounds = serin
        .metric("serin_check_rounds_total")
        .await
        .unwrap_or(0.0);
    let queries = serin
        .metric("serin_metric_queries_total")
        .await
        .unwrap_or(0.0);
    eprintln!("measured: {rounds} check rounds sent {queries} Prometheus queries (2 metrics)");
    assert_eq!(queries, 2.0 * rounds, "one query per metric per round");
    assert!(
        rounds >= 3.0,
        "a round for each step past weight 0: {rounds}"
    );
    assert_eq!(
        image_of(&client, &ns, "podinfo-primary").await,
        ("podinfo:2.0.0".into(), 3)
    );
    let s = serin_e2e::podinfo::status(&client, &ns).await;
    assert_eq!(s.failed_checks, 0);
    let rate = check(&s, "request-success-rate");
    assert_eq!(rate.verdict, CheckVerdict::Passed, "{rate:?}");
    assert_eq!(rate.value, Some(100.0));
    let duration = check(&s, "request-duration");
    assert_eq!(duration.verdict, CheckVerdict::Passed, "{duration:?}");
    // 20ms +-20% lies in podinfo's (10ms, 25ms] bucket.
    let ms = duration.value.expect("a duration");
    assert!((10.0..=25.0).contains(&ms), "p99 {ms}ms");
}

#[tokio::test]
async fn an_image_with_errors_is_rolled_back_after_threshold_failed_checks() {
    image_with_errors("gatewayapi").await;
}

/// The same through a VirtualService, judged by Istio's series.
#[tokio::test]
async fn an_image_with_errors_is_rolled_back_after_threshold_failed_checks_through_istio() {
    image_with_errors("istio").await;
}

async fn image_with_errors(provider: &str) {
    let analysis = json!({"interval": "2s", "stepWeight": 20, "maxWeight": 60, "threshold": 2, "metrics": builtin_checks()});
    let (client, ns, serin) = roll_out(
        &format!("analysis-errors-{provider}"),
        analysis,
        on(provider, json!({})),
        behaviour(0.2, 20),
        |_, _| async {},
    )
    .await;
    let s = wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(90)).await;
    assert_eq!(s.failed_checks, 2);
    let rate = check(&s, "request-success-rate");
    assert_eq!(rate.verdict, CheckVerdict::Failed, "{rate:?}");
    let value = rate.value.expect("the failing value");
    // Failing, and far from 100%. Not much closer to 80% than that: the check reads a 10-s rate() in the
    // canary's first seconds, where each new pod's 5xx series loses the errors before its first scrape (a
    // series is born at its first error) and so reads high (CI measured 95.19% once).
    assert!(
        (60.0..99.0).contains(&value),
        "success rate {value}%, pods fail 20%"
    );
    let message = ready_message(&s);
    assert!(
        message.contains("request-success-rate") && message.contains("< 99% (min)"),
        "{message}"
    );
    assert_rolled_back(&client, &ns).await;
    // Each failed check is an event of its own, with its own value.
    let notes = event_notes(&client, &ns, "CheckFailed").await;
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes
            .iter()
            .all(|n| n.contains("request-success-rate") && n.contains("% < 99% (min)")),
        "{notes:?}"
    );
    assert!(notes[1].contains("(failed checks 2 of 2)"), "{notes:?}");
    let exported = serin
        .metric_where(
            "serin_canary_metric_value",
            &[r#"metric="request-success-rate""#],
        )
        .await;
    // To the last bits: in CI /metrics once showed 91.53674832962137 against the status' ...136 (both
    // print and parse back exactly): two evaluations of the same samples at different times, whose
    // extrapolation scales the success rate's numerator and denominator alike and rounds the ratio
    // differently; the gauge had been set by another round than the status' last.
    let exported = exported.expect("the gauge on /metrics");
    assert!(
        (exported - value).abs() <= 1e-9 * value.abs(),
        "/metrics shows {exported}, the status {value}"
    );
}

#[tokio::test]
async fn a_slow_image_is_rolled_back() {
    slow_image("gatewayapi").await;
}

/// The same through a VirtualService, judged by Istio's series.
#[tokio::test]
async fn a_slow_image_is_rolled_back_through_istio() {
    slow_image("istio").await;
}

async fn slow_image(provider: &str) {
    let analysis = json!({"interval": "2s", "stepWeight": 20, "maxWeight": 60, "threshold": 2, "metrics": builtin_checks()});
    let (client, ns, _serin) = roll_out(
        &format!("analysis-slow-{provider}"),
        analysis,
        on(provider, json!({})),
        behaviour(0.0, 900),
        |_, _| async {},
    )
    .await;
    let s = wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(90)).await;
    let duration = check(&s, "request-duration");
    assert_eq!(duration.verdict, CheckVerdict::Failed, "{duration:?}");
    let ms = duration.value.expect("the failing value");
    assert!(ms > 500.0, "p99 {ms}ms");
    assert_eq!(
        check(&s, "request-success-rate").verdict,
        CheckVerdict::Passed
    );
    assert!(
        ready_message(&s).contains("request-duration"),
        "{}",
        ready_message(&s)
    );
    assert_rolled_back(&client, &ns).await;
}

#[tokio::test]
async fn a_canary_without_traffic_holds_then_fails_at_the_deadline_with_no_data() {
    no_traffic("gatewayapi").await;
}

/// The same through a VirtualService, judged by Istio's series.
#[tokio::test]
async fn a_canary_without_traffic_holds_then_fails_at_the_deadline_with_no_data_through_istio() {
    no_traffic("istio").await;
}

async fn no_traffic(provider: &str) {
    let analysis =
        json!({"interval": "2s", "stepWeight": 20, "threshold": 1, "metrics": builtin_checks()});
    let (client, ns, _serin) = roll_out(
        &format!("analysis-idle-{provider}"),
        analysis,
        on(provider, json!({"progressDeadlineSeconds": 12})),
        behaviour(0.0, 20),
        // The simulator sends this route no requests at all.
        |client, ns| async move {
            let route = if provider == "istio" {
                serin::routing::istio::virtual_services()
            } else {
                serin_e2e::httproute_resource()
            };
            serin_e2e::annotate(
                &client,
                &ns,
                &route,
                "podinfo",
                json!({"trafficsim.serin.dev/rps": "0"}),
            )
            .await;
        },
    )
    .await;
    let held = wait_for(
        "the canary to hold on no data",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let s = serin_e2e::podinfo::status(&client, &ns).await;
            let m = ready_message(&s);
            if s.phase == Some(Phase::Progressing) && m.contains("no data") {
                Ok(s)
            } else {
                Err(format!("{:?}: {m}", s.phase))
            }
        },
    )
    .await;
    assert_eq!(held.canary_weight, 20, "held at the first step's weight");
    assert_eq!(
        check(&held, "request-success-rate").verdict,
        CheckVerdict::NoData
    );
    let s = wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(40)).await;
    assert_eq!(s.failed_checks, 0, "no data never counts as a failed check");
    let message = ready_message(&s);
    assert!(
        message.contains("no data for request-success-rate: is traffic reaching podinfo-canary?")
            && message.contains("progress deadline"),
        "{message}"
    );
    assert_rolled_back(&client, &ns).await;
}

#[tokio::test]
async fn a_metric_template_with_variables_drives_a_check() {
    let analysis = json!({"interval": "2s", "stepWeight": 20, "threshold": 2, "metrics": [{
        "name": "error-percentage", "interval": "10s", "thresholdRange": {"max": 5},
        "templateRef": {"name": "error-percentage"},
        "templateVariables": {"failures": "5.."}
    }]});
    let prometheus = cluster().await.prometheus().to_string();
    let (client, ns, _serin) = roll_out(
        "analysis-template",
        analysis,
        json!({}),
        behaviour(0.2, 20),
        |client, ns| async move {
            let sel = r#"reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload="{{ target }}""#;
            let query = format!(
                r#"100 * (sum(rate(istio_requests_total{{{sel}, response_code=~"{{{{ variables.failures }}}}"}}[{{{{ interval }}}}])) or on() vector(0)) / sum(rate(istio_requests_total{{{sel}}}[{{{{ interval }}}}]))"#
            );
            apply::<MetricTemplate>(
                &client,
                &ns,
                json!({"apiVersion": "serin.dev/v1beta1", "kind": "MetricTemplate",
                    "metadata": {"name": "error-percentage"},
                    "spec": {"provider": {"type": "prometheus", "address": prometheus}, "query": query}}),
            )
            .await;
        },
    )
    .await;
    let s = wait_phase(&client, &ns, Phase::Failed, Duration::from_secs(90)).await;
    let c = check(&s, "error-percentage");
    assert_eq!(c.verdict, CheckVerdict::Failed, "{c:?}");
    let value = c.value.expect("the failing value");
    assert!(
        (5.0..40.0).contains(&value),
        "error percentage {value}, pods fail 20%"
    );
    assert!(
        ready_message(&s).contains("error-percentage") && ready_message(&s).contains("> 5 (max)"),
        "{}",
        ready_message(&s)
    );
    assert_rolled_back(&client, &ns).await;
}

/// The istio family's built-in queries, run by Serin's checks against the real Prometheus while the
/// simulator sends traffic through an HTTPRoute to two workloads: one good, one failing 20% and slow.
/// (The lifecycle through a VirtualService, with these queries, is in tests/istio.rs.)
#[tokio::test]
async fn istio_built_in_checks_judge_real_traffic() {
    let client = client().await;
    serin_e2e::install_crds(&client).await;
    let ns = namespace(&client, "analysis-istio").await;
    for (name, pods) in [("good", behaviour(0.0, 20)), ("bad", behaviour(0.2, 900))] {
        apply::<Deployment>(&client, &ns, app(name, 2, "podinfo:1.0.0", pods)).await;
        apply::<Service>(&client, &ns, service(name)).await;
        wait_rolled_out(&client, &ns, name, 2).await;
        apply_httproute(
            &client,
            &ns,
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": name, "annotations": {"trafficsim.serin.dev/rps": "100"}},
                "spec": {"rules": [{"backendRefs": [{"name": name, "port": 9898}]}]}}),
        )
        .await;
    }
    // Wait until Prometheus has a few seconds of both workloads' traffic.
    for name in ["good", "bad"] {
        let seen = format!(
            r#"sum(increase(istio_requests_total{{destination_workload_namespace="{ns}", destination_workload="{name}"}}[10s]))"#
        );
        wait_for(
            &format!("{name}'s traffic in Prometheus"),
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                match prometheus_value(&seen).await {
                    Ok(n) if n >= 500.0 => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }

    let (templates, _w) = reflector::store::<MetricTemplate>();
    let (secrets, _s) = reflector::store();
    let analyzer = Analyzer::new(
        templates,
        secrets,
        cluster().await.prometheus().to_string(),
        serin::api::Provider::Istio,
        Duration::from_secs(5),
        Default::default(),
    );
    let canary = |target: &str| -> Canary {
        serde_json::from_value(json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": target, "namespace": ns},
            "spec": {"provider": "istio", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                "service": {"port": 9898}, "analysis": {"interval": "10s", "iterations": 1, "metrics": builtin_checks()}}}))
        .expect("a Canary")
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };

    let good = analyzer.run(&canary("good"), now()).await;
    assert_eq!(good.verdict, Checks::Passed, "{:?}", good.results);
    assert_eq!(good.results[0].value, Some(100.0));
    let ms = good.results[1].value.expect("good's p99");
    // Istio's buckets: 20ms +-20% lies in (10, 25].
    assert!((10.0..=25.0).contains(&ms), "good p99 {ms}ms");

    let bad = analyzer.run(&canary("bad"), now()).await;
    assert!(
        matches!(bad.verdict, Checks::Failed { .. }),
        "{:?}",
        bad.verdict
    );
    let rate = bad.results[0].value.expect("bad's success rate");
    assert!((70.0..90.0).contains(&rate), "bad success rate {rate}%");
    assert_eq!(bad.results[0].verdict, CheckVerdict::Failed);
    let ms = bad.results[1].value.expect("bad's p99");
    assert!(ms > 500.0, "bad p99 {ms}ms");
    assert_eq!(bad.results[1].verdict, CheckVerdict::Failed);

    // A workload nobody sends requests to: no data, not a pass nor a failure.
    let idle = analyzer.run(&canary("idle"), now()).await;
    assert!(
        matches!(idle.verdict, Checks::NoData { .. }),
        "{:?}",
        idle.verdict
    );
    assert!(
        idle.results
            .iter()
            .all(|r| r.verdict == CheckVerdict::NoData)
    );
}
