//! The checks as the controller runs them, with MetricTemplates and Secrets in real watch-cache stores
//! and a metrics server that is not there: every way a check can fail to produce a value.

use super::*;
use crate::api::CheckVerdict;
use crate::metrics::provider::nowhere;
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};

fn analyzer(templates: Vec<Value>, secrets: Vec<Value>) -> Analyzer {
    let (template_store, mut tw) = reflector::store::<MetricTemplate>();
    for t in templates {
        tw.apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(t).unwrap()));
    }
    let (secret_store, mut sw) = reflector::store::<Secret>();
    for s in secrets {
        sw.apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(s).unwrap()));
    }
    Analyzer::new(
        template_store,
        secret_store,
        nowhere(),
        Provider::GatewayApi,
        Duration::from_secs(2),
        Counter::default(),
    )
}

fn canary(spec: Value) -> Canary {
    let mut full = json!({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898}});
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "shop"}, "spec": full}))
    .unwrap()
}

fn template(namespace: &str, name: &str, provider: Value, query: &str) -> Value {
    json!({"apiVersion": "serin.dev/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"provider": provider, "query": query}})
}

async fn one(a: &Analyzer, c: &Canary) -> CheckStatus {
    let round = a.run(c, 0.0).await;
    assert!(
        matches!(round.verdict, crate::decision::Checks::NoData { .. }),
        "{:?}",
        round.verdict
    );
    assert_eq!(round.results.len(), 1);
    round.results[0].clone()
}

fn analysis(metric: Value) -> Value {
    json!({"analysis": {"interval": "10s", "stepWeight": 10, "metrics": [metric]}})
}

#[tokio::test]
async fn a_missing_template_holds_and_names_it() {
    let a = analyzer(vec![], vec![]);
    let c = canary(analysis(
        json!({"name": "errors", "templateRef": {"name": "errors", "namespace": "ops"}}),
    ));
    let r = one(&a, &c).await;
    assert_eq!(r.verdict, CheckVerdict::Error);
    assert_eq!(
        r.message.as_deref(),
        Some("errors: MetricTemplate ops/errors not found")
    );
    assert_eq!(a.queries.get(), 0);
}

#[tokio::test]
async fn a_template_with_a_missing_variable_is_never_run() {
    let a = analyzer(
        vec![template(
            "shop",
            "errors",
            json!({"type": "prometheus", "address": nowhere()}),
            "sum(x{code=~\"{{ variables.codes }}\"})",
        )],
        vec![],
    );
    // The template's namespace defaults to the Canary's.
    let c = canary(analysis(
        json!({"name": "errors", "templateRef": {"name": "errors"}, "templateVariables": {"code": "5.."}}),
    ));
    let r = one(&a, &c).await;
    assert_eq!(r.verdict, CheckVerdict::Error);
    assert_eq!(
        r.message.as_deref(),
        Some(
            "errors: MetricTemplate shop/errors: spec.query: no variable \"codes\" in templateVariables (has: code)"
        )
    );
    assert_eq!(a.queries.get(), 0, "a half-rendered query is never sent");
}

#[tokio::test]
async fn a_provider_serin_lacks_is_named() {
    let a = analyzer(
        vec![template(
            "shop",
            "dd",
            json!({"type": "datadog"}),
            "avg:x{*}",
        )],
        vec![],
    );
    let c = canary(analysis(
        json!({"name": "dd", "templateRef": {"name": "dd"}}),
    ));
    let r = one(&a, &c).await;
    assert_eq!(
        r.message.as_deref(),
        Some(
            "dd: MetricTemplate shop/dd: spec.provider.type: datadog is not supported yet (supported: prometheus)"
        )
    );
    let c = canary(
        json!({"provider": "gloo", "analysis": {"interval": "10s", "stepWeight": 10,
        "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}}]}}),
    );
    let r = one(&a, &c).await;
    assert!(
        r.message
            .as_deref()
            .is_some_and(|m| m.contains("no queries for provider gloo")),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_secret_that_is_missing_or_incomplete_is_an_error() {
    let provider =
        json!({"type": "prometheus", "address": "http://prom:9090", "secretRef": {"name": "prom"}});
    let a = analyzer(vec![template("shop", "t", provider.clone(), "up")], vec![]);
    let c = canary(analysis(json!({"name": "t", "templateRef": {"name": "t"}})));
    assert_eq!(
        one(&a, &c).await.message.as_deref(),
        Some("t: MetricTemplate shop/t: spec.provider.secretRef: Secret shop/prom not found")
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prom", "namespace": "shop"},
        "data": {"username": "dXNlcg=="}});
    let a = analyzer(vec![template("shop", "t", provider, "up")], vec![secret]);
    assert_eq!(
        one(&a, &c).await.message.as_deref(),
        Some("t: Secret shop/prom has a username but no password")
    );
    assert_eq!(a.queries.get(), 0, "refused before sending");
}

#[tokio::test]
async fn addresses_fall_back_from_the_template_to_the_canary_to_the_controller() {
    let canary_server = nowhere();
    let a = analyzer(
        vec![template("shop", "t", json!({"type": "prometheus"}), "up")],
        vec![],
    );
    let with = canary(
        json!({"metricsServer": canary_server, "analysis": {"interval": "10s", "stepWeight": 10,
        "metrics": [{"name": "t", "templateRef": {"name": "t"}}, {"name": "request-duration", "thresholdRange": {"max": 500}}]}}),
    );
    let round = a.run(&with, 0.0).await;
    for r in &round.results {
        let m = r.message.clone().unwrap_or_default();
        assert!(
            m.contains(&format!(
                "Prometheus at {canary_server} could not be reached"
            )),
            "{m}"
        );
        assert!(m.contains("; query: "), "{m}");
    }
    let without = canary(analysis(json!({"name": "t", "templateRef": {"name": "t"}})));
    let m = one(&a, &without).await.message.unwrap_or_default();
    assert!(
        m.contains(&format!("Prometheus at {} could not", a.default_server)),
        "{m}"
    );
}

#[test]
fn variables_are_filled_as_flagger_fills_them() {
    let canary: Canary = serde_json::from_value(json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 80}, "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "ing"}}
    }))
    .unwrap();
    let metric: Metric =
        serde_json::from_value(json!({"name": "x", "templateVariables": {"k": "v"}})).unwrap();
    let v = variables(&canary, &metric);
    assert_eq!(
        (v.name.as_str(), v.namespace.as_str(), v.target.as_str()),
        ("web", "shop", "podinfo")
    );
    assert_eq!(
        (v.service.as_str(), v.ingress.as_str(), v.route.as_str()),
        ("podinfo", "ing", "podinfo")
    );
    assert_eq!(v.interval, "1m");
    assert_eq!(v.variables["k"], "v");
    let metric: Metric = serde_json::from_value(json!({"name": "x", "interval": "30s"})).unwrap();
    assert_eq!(variables(&canary, &metric).interval, "30s");
}

#[tokio::test]
async fn a_built_in_name_with_a_template_and_a_query_runs_all_three() {
    let a = analyzer(
        vec![template("shop", "t", json!({"type": "prometheus"}), "up")],
        vec![],
    );
    let c = canary(analysis(json!({"name": "request-success-rate",
        "templateRef": {"name": "t"}, "query": "vector(1)", "thresholdRange": {"min": 99}})));
    let round = a.run(&c, 0.0).await;
    let names: Vec<&str> = round.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "request-success-rate",
            "request-success-rate (template)",
            "request-success-rate (query)"
        ]
    );
    assert_eq!(a.queries.get(), 3);
    // A templated metric with an inline query too: the template under the metric's name.
    let c = canary(analysis(
        json!({"name": "errors", "templateRef": {"name": "t"}, "query": "vector(1)"}),
    ));
    let names: Vec<String> = a
        .run(&c, 0.0)
        .await
        .results
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["errors", "errors (query)"]);
}

#[tokio::test]
async fn a_templates_own_address_wins_over_the_canarys() {
    let (template_server, canary_server) = (nowhere(), nowhere());
    let a = analyzer(
        vec![template(
            "shop",
            "t",
            json!({"type": "prometheus", "address": template_server}),
            "up",
        )],
        vec![],
    );
    let c = canary(
        json!({"metricsServer": canary_server, "analysis": {"interval": "10s", "stepWeight": 10,
        "metrics": [{"name": "t", "templateRef": {"name": "t"}}]}}),
    );
    let m = one(&a, &c).await.message.unwrap_or_default();
    assert!(
        m.contains(&format!("Prometheus at {template_server} could not")),
        "{m}"
    );
}

/// Defect 3: a tenant points their Canary at another namespace's template (which has a Secret but no
/// address) and at their own metricsServer. The template's token never reaches that server.
#[tokio::test]
async fn a_templates_credentials_never_go_to_the_canarys_server() {
    let (tenant_server, reached) =
        provider::recording_server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_string())
            .await;
    let provider = json!({"type": "prometheus", "secretRef": {"name": "prom"},
        "headers": {"X-Scope-OrgID": ["team-a"]}});
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prom", "namespace": "monitoring"},
        "stringData": {"token": "team-a-s3cr3t"}});
    let a = analyzer(
        vec![template("monitoring", "t", provider, "up")],
        vec![secret],
    );
    let mut c = canary(
        json!({"metricsServer": tenant_server, "analysis": {"interval": "10s", "stepWeight": 10,
        "metrics": [{"name": "t", "templateRef": {"name": "t", "namespace": "monitoring"}}]}}),
    );
    c.metadata.namespace = Some("tenant-b".into());
    let result = one(&a, &c).await;
    assert_eq!(result.verdict, CheckVerdict::Error);
    let m = result.message.unwrap_or_default();
    assert!(m.contains("spec.provider.address is empty"), "{m}");
    assert!(
        reached.lock().unwrap().is_empty(),
        "{:?}",
        reached.lock().unwrap()
    );
    assert_eq!(a.queries.get(), 0);
}
