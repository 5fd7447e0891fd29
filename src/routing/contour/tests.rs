//! Golden HTTPProxies per strategy, and the traffic read back from them.

use super::*;

fn canary(service: Value, analysis: Value) -> Canary {
    let mut spec = json!({"port": 9898});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), service.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
        "spec": {"provider": "contour", "targetRef": {"name": "podinfo"}, "service": spec, "analysis": analysis}
    }))
    .unwrap()
}

fn l5d(service: &str) -> Value {
    json!({"set": [{"name": "l5d-dst-override", "value": format!("{service}.test.svc.cluster.local:9898")}]})
}

#[test]
fn a_split_is_one_route_with_the_services_settings() {
    let c = canary(
        json!({"timeout": "15s", "retries": {"attempts": 3, "perTryTimeout": "5s", "retryOn": "5xx, gateway-error"},
            "match": [{"uri": {"prefix": "/api"}}]}),
        json!({"stepWeight": 10}),
    );
    let objects = ContourRouter::default()
        .desired(&c, Traffic::Split(Weights::canary(30)))
        .unwrap();
    assert_eq!(objects.len(), 1);
    let proxy = &objects[0];
    let types = proxy.types.as_ref().unwrap();
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("projectcontour.io/v1", "HTTPProxy")
    );
    assert_eq!(proxy.metadata.name.as_deref(), Some("podinfo"));
    assert!(proxy.metadata.owner_references.is_some());
    assert_eq!(
        proxy.data["spec"],
        json!({"routes": [{
            "conditions": [{"prefix": "/api"}],
            "timeoutPolicy": {"response": "15s", "idle": "5m"},
            "retryPolicy": {"count": 3, "perTryTimeout": "5s", "retryOn": ["5xx", "gateway-error"]},
            "services": [
                {"name": "podinfo-primary", "port": 9898, "weight": 70, "requestHeadersPolicy": l5d("podinfo-primary")},
                {"name": "podinfo-canary", "port": 9898, "weight": 30, "requestHeadersPolicy": l5d("podinfo-canary")}]
        }]})
    );
    assert_eq!(
        ContourRouter::default().traffic(&c, proxy),
        Some(Traffic::Split(Weights::canary(30)))
    );
}

#[test]
fn ab_gives_each_match_its_own_route_before_the_split() {
    let c = canary(
        json!({}),
        json!({"iterations": 5, "match": [
            {"headers": {"x-canary": {"exact": "insider"}, "user-agent": {"prefix": "Mozilla/5.0 (X11"}}},
            {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}},
            {"headers": {"x-tier": {"suffix": "beta"}}}]}),
    );
    let proxy = &ContourRouter::default()
        .desired(&c, Traffic::Matched)
        .unwrap()[0];
    let routes = proxy.data["spec"]["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 4);
    // Within one route the conditions are ANDed: both headers of the first entry.
    assert_eq!(
        routes[0]["conditions"],
        json!([{"prefix": "/"},
            {"header": {"name": "user-agent", "regex": r"^Mozilla/5\.0 \(X11.*"}},
            {"header": {"name": "x-canary", "exact": "insider"}}])
    );
    assert_eq!(
        routes[1]["conditions"][1],
        json!({"header": {"name": "cookie", "regex": "^(.*?;)?(canary=always)(;.*)?$"}})
    );
    assert_eq!(
        routes[2]["conditions"][1],
        json!({"header": {"name": "x-tier", "regex": ".*beta$"}})
    );
    for r in &routes[..3] {
        assert_eq!(r["services"][0]["weight"], 0);
        assert_eq!(r["services"][1]["weight"], 100);
    }
    assert_eq!(routes[3]["conditions"], json!([{"prefix": "/"}]));
    assert_eq!(routes[3]["services"][0]["weight"], 100);
    assert_eq!(routes[3]["services"][1]["weight"], 0);
    assert_eq!(
        ContourRouter::default().traffic(&c, proxy),
        Some(Traffic::Matched)
    );
}

#[test]
fn ab_without_a_header_is_refused_naming_the_field() {
    let c = canary(
        json!({}),
        json!({"iterations": 5, "match": [{"sourceLabels": {"app": "x"}}]}),
    );
    let err = ContourRouter::default()
        .desired(&c, Traffic::Matched)
        .unwrap_err();
    assert!(err.to_string().contains("spec.analysis.match"), "{err}");
    let c = canary(
        json!({}),
        json!({"iterations": 5, "match": [{"headers": {"x": {"present": true}}}]}),
    );
    let err = ContourRouter::default()
        .desired(&c, Traffic::Matched)
        .unwrap_err();
    assert!(err.to_string().contains("headers.x"), "{err}");
}

#[test]
fn weights_are_read_back_as_stored() {
    let c = canary(json!({}), json!({}));
    let mut proxy = DynamicObject::new("podinfo", &http_proxies());
    // A weight left out is 0; an unknown service is not counted.
    proxy.data = json!({"spec": {"routes": [{"services": [
        {"name": "podinfo-primary", "port": 9898, "weight": 3},
        {"name": "podinfo-canary", "port": 9898, "weight": 1},
        {"name": "other", "port": 80, "weight": 50}]}]}});
    assert_eq!(
        ContourRouter::default().traffic(&c, &proxy),
        Some(Traffic::Split(Weights::canary(25)))
    );
    proxy.data = json!({"spec": {"routes": [{"services": [
        {"name": "podinfo-primary", "port": 9898},
        {"name": "podinfo-canary", "port": 9898}]}]}});
    assert_eq!(ContourRouter::default().traffic(&c, &proxy), None);
}

#[test]
fn handed_back_sends_every_route_to_the_apex_without_the_owner() {
    let c = canary(json!({"timeout": "15s"}), json!({}));
    let proxy = &ContourRouter::default().handed_back(&c).unwrap()[0];
    assert!(proxy.metadata.owner_references.is_none());
    assert_eq!(
        proxy.data["spec"]["routes"][0]["services"],
        json!([{"name": "podinfo", "port": 9898, "weight": 100, "requestHeadersPolicy": l5d("podinfo")}])
    );
    assert_eq!(
        proxy.data["spec"]["routes"][0]["timeoutPolicy"]["response"],
        "15s"
    );
}

/// `--ingress-class`: the HTTPProxy carries the class, as Flagger sets it; none by default.
#[test]
fn the_ingress_class_is_set_when_configured() {
    let c = canary(json!({}), json!({"stepWeight": 10}));
    let router = ContourRouter {
        ingress_class: Some("internal".into()),
    };
    let proxy = &router
        .desired(&c, Traffic::Split(Weights::canary(10)))
        .unwrap()[0];
    assert_eq!(proxy.data["spec"]["ingressClassName"], "internal");
    assert_eq!(
        router.traffic(&c, proxy),
        Some(Traffic::Split(Weights::canary(10)))
    );
    let proxy = &ContourRouter::default()
        .desired(&c, Traffic::Split(Weights::canary(10)))
        .unwrap()[0];
    assert!(proxy.data["spec"].get("ingressClassName").is_none());
}
