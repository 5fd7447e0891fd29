//! Golden objects per strategy, and the traffic read back from the shapes the API server stores.

use super::*;
use serde_json::json;

fn canary(service: Value, analysis: Value) -> Canary {
    let mut spec = json!({"port": 9898});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), service.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
        "spec": {"provider": "istio", "targetRef": {"name": "podinfo"}, "service": spec, "analysis": analysis}
    }))
    .unwrap()
}

#[test]
fn a_split_is_one_http_route_beside_a_destination_rule_per_host() {
    let c = canary(
        json!({"hosts": ["app.example.com"], "gateways": ["public-gateway.istio-system.svc.cluster.local"],
            "timeout": "30s", "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "gateway-error"},
            "headers": {"request": {"add": {"x-served-by": "serin"}}},
            "rewrite": {"uri": "/"}, "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
            "match": [{"uri": {"prefix": "/"}}]}),
        json!({"stepWeight": 10}),
    );
    let objects = IstioRouter
        .desired(&c, Traffic::Split(Weights::canary(30)))
        .unwrap();
    assert_eq!(objects.len(), 3);
    let vs = &objects[0];
    assert_eq!(vs.metadata.name.as_deref(), Some("podinfo"));
    assert_eq!(vs.types.as_ref().unwrap().kind, "VirtualService");
    assert_eq!(
        vs.types.as_ref().unwrap().api_version,
        "networking.istio.io/v1"
    );
    assert_eq!(
        vs.metadata.owner_references.as_ref().unwrap()[0].kind,
        "Canary"
    );
    assert_eq!(
        vs.data["spec"],
        json!({"hosts": ["app.example.com", "podinfo"],
            "gateways": ["public-gateway.istio-system.svc.cluster.local"],
            "http": [{"match": [{"uri": {"prefix": "/"}}], "rewrite": {"uri": "/"}, "timeout": "30s",
                "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "gateway-error"},
                "headers": {"request": {"add": {"x-served-by": "serin"}}},
                "route": [{"destination": {"host": "podinfo-primary"}, "weight": 70},
                          {"destination": {"host": "podinfo-canary"}, "weight": 30}]}]})
    );
    for (rule, host) in objects[1..]
        .iter()
        .zip(["podinfo-canary", "podinfo-primary"])
    {
        assert_eq!(rule.types.as_ref().unwrap().kind, "DestinationRule");
        assert_eq!(rule.metadata.name.as_deref(), Some(host));
        assert_eq!(
            rule.data["spec"],
            json!({"host": host, "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}})
        );
    }
    assert_eq!(
        IstioRouter.traffic(&c, vs),
        Some(Traffic::Split(Weights::canary(30)))
    );
}

#[test]
fn the_mesh_gateway_and_the_apex_host_are_the_defaults() {
    let c = canary(json!({}), json!({}));
    let vs = &IstioRouter
        .desired(&c, Traffic::Split(Weights::canary(0)))
        .unwrap()[0];
    assert_eq!(vs.data["spec"]["hosts"], json!(["podinfo"]));
    assert_eq!(vs.data["spec"]["gateways"], json!(["mesh"]));
    assert_eq!(
        vs.data["spec"]["http"][0]["route"],
        json!([{"destination": {"host": "podinfo-primary"}, "weight": 100},
               {"destination": {"host": "podinfo-canary"}, "weight": 0}])
    );
    // A DestinationRule without a traffic policy is the host alone.
    let rules = IstioRouter
        .desired(&c, Traffic::Split(Weights::canary(0)))
        .unwrap();
    assert_eq!(rules[1].data["spec"], json!({"host": "podinfo-canary"}));
}

#[test]
fn ab_sends_matching_requests_to_the_canary_merged_with_the_service_match() {
    let c = canary(
        json!({"match": [{"uri": {"prefix": "/api"}}]}),
        json!({"iterations": 3, "match": [{"headers": {"x-canary": {"exact": "insider"}}},
            {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}]}),
    );
    let vs = &IstioRouter.desired(&c, Traffic::Matched).unwrap()[0];
    assert_eq!(
        vs.data["spec"]["http"],
        json!([
            {"match": [{"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "insider"}}},
                       {"uri": {"prefix": "/api"}, "headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}],
             "route": [{"destination": {"host": "podinfo-primary"}, "weight": 0},
                       {"destination": {"host": "podinfo-canary"}, "weight": 100}]},
            {"match": [{"uri": {"prefix": "/api"}}],
             "route": [{"destination": {"host": "podinfo-primary"}, "weight": 100}]}
        ])
    );
    assert_eq!(IstioRouter.traffic(&c, vs), Some(Traffic::Matched));
}

#[test]
fn tcp_services_get_a_tcp_route_and_refuse_ab() {
    let c = canary(
        json!({"appProtocol": "TCP", "match": [{"port": 9898}]}),
        json!({"stepWeight": 20}),
    );
    let vs = &IstioRouter
        .desired(&c, Traffic::Split(Weights::canary(40)))
        .unwrap()[0];
    assert_eq!(
        vs.data["spec"]["tcp"],
        json!([{"match": [{"port": 9898}],
            "route": [{"destination": {"host": "podinfo-primary"}, "weight": 60},
                      {"destination": {"host": "podinfo-canary"}, "weight": 40}]}])
    );
    assert!(vs.data["spec"].get("http").is_none());
    assert_eq!(
        IstioRouter.traffic(&c, vs),
        Some(Traffic::Split(Weights::canary(40)))
    );
    let err = IstioRouter.desired(&c, Traffic::Matched).unwrap_err();
    assert!(err.to_string().contains("tcp"), "{err}");
}

#[test]
fn delegation_leaves_hosts_and_gateways_out_and_refuses_them() {
    let c = canary(
        json!({"delegation": true, "portDiscovery": true}),
        json!({}),
    );
    let vs = &IstioRouter
        .desired(&c, Traffic::Split(Weights::canary(0)))
        .unwrap()[0];
    assert!(vs.data["spec"].get("hosts").is_none());
    assert!(vs.data["spec"].get("gateways").is_none());
    // Behind a delegating VirtualService the destination names the port.
    assert_eq!(
        vs.data["spec"]["http"][0]["route"][0]["destination"],
        json!({"host": "podinfo-primary", "port": {"number": 9898}})
    );
    let c = canary(json!({"delegation": true, "hosts": ["a"]}), json!({}));
    let err = IstioRouter
        .desired(&c, Traffic::Split(Weights::canary(0)))
        .unwrap_err();
    assert!(err.to_string().contains("spec.service.delegation"), "{err}");
}

#[test]
fn weights_are_read_back_from_what_another_writer_left() {
    let c = canary(json!({}), json!({}));
    let vs = |http: Value| {
        let mut o = DynamicObject::new("podinfo", &virtual_services());
        o.data = json!({"spec": {"hosts": ["podinfo"], "http": http}});
        o
    };
    // A missing weight is 0; weights are read as shares of their sum.
    let stored = vs(json!([{"route": [
        {"destination": {"host": "podinfo-primary"}, "weight": 50},
        {"destination": {"host": "podinfo-canary"}}]}]));
    assert_eq!(
        IstioRouter.traffic(&c, &stored),
        Some(Traffic::Split(Weights::canary(0)))
    );
    let stored = vs(json!([{"route": [
        {"destination": {"host": "podinfo-primary"}, "weight": 1},
        {"destination": {"host": "podinfo-canary"}, "weight": 3}]}]));
    assert_eq!(
        IstioRouter.traffic(&c, &stored),
        Some(Traffic::Split(Weights::canary(75)))
    );
    // Nothing to the primary or canary hosts: it can't tell.
    let stored = vs(json!([{"route": [{"destination": {"host": "podinfo"}, "weight": 100}]}]));
    assert_eq!(IstioRouter.traffic(&c, &stored), None);
}

#[test]
fn handed_back_sends_everything_to_the_apex_without_the_owner() {
    let c = canary(json!({"hosts": ["app.example.com"]}), json!({}));
    let objects = IstioRouter.handed_back(&c).unwrap();
    assert_eq!(objects.len(), 1);
    assert!(objects[0].metadata.owner_references.is_none());
    assert_eq!(
        objects[0].data["spec"]["http"][0]["route"],
        json!([{"destination": {"host": "podinfo"}, "weight": 100}])
    );
}

#[test]
fn mirroring_keeps_every_request_on_the_primary_and_copies_them_to_the_canary() {
    let c = canary(
        json!({}),
        json!({"iterations": 2, "mirror": true, "mirrorWeight": 40}),
    );
    let vs = &IstioRouter.desired(&c, Traffic::Mirrored).unwrap()[0];
    let http = &vs.data["spec"]["http"][0];
    assert_eq!(http["mirror"], json!({"host": "podinfo-canary"}));
    assert_eq!(http["mirrorPercentage"], json!({"value": 40.0}));
    assert_eq!(http["route"][0]["weight"], 100);
    assert_eq!(http["route"][1]["weight"], 0);
    assert_eq!(IstioRouter.traffic(&c, vs), Some(Traffic::Mirrored));
    // All requests when mirrorWeight is left out: no percentage.
    let all = canary(json!({}), json!({"iterations": 2, "mirror": true}));
    let vs = &IstioRouter.desired(&all, Traffic::Mirrored).unwrap()[0];
    assert!(vs.data["spec"]["http"][0].get("mirrorPercentage").is_none());
    // TCP can't mirror.
    let tcp = canary(
        json!({"appProtocol": "tcp"}),
        json!({"iterations": 2, "mirror": true}),
    );
    let err = IstioRouter.desired(&tcp, Traffic::Mirrored).unwrap_err();
    assert!(err.to_string().contains("spec.analysis.mirror"), "{err}");
}

/// Session affinity, as Flagger routes it: the canary's cookie first (to the canary), the primary's next
/// (to the primary), then the split whose destinations set them; at weight 0, requests with the cookie
/// are routed as the rest and it is expired.
#[test]
fn session_affinity_puts_cookie_routes_before_the_split() {
    let mut c = canary(
        json!({"match": [{"uri": {"prefix": "/"}}]}),
        json!({"interval": "20s", "stepWeight": 10,
            "sessionAffinity": {"cookieName": "canary", "primaryCookieName": "primary", "maxAge": 120}}),
    );
    c.status = Some(crate::api::CanaryStatus {
        last_applied_spec: Some("r2".into()),
        ..Default::default()
    });
    let vs = &IstioRouter
        .desired(&c, Traffic::Split(Weights::canary(10)))
        .unwrap()[0];
    let http = &vs.data["spec"]["http"];
    let regex = |i: usize| {
        http[i]["match"][0]["headers"]["Cookie"]["regex"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(regex(0).starts_with("(.*; ?)?canary="), "{}", regex(0));
    assert!(regex(1).starts_with("(.*; ?)?primary="), "{}", regex(1));
    // The service's uri match stays in each cookie route.
    assert_eq!(http[0]["match"][0]["uri"], json!({"prefix": "/"}));
    let weights = |i: usize| {
        http[i]["route"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["weight"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (weights(0), weights(1), weights(2)),
        (vec![0, 100], vec![100, 0], vec![90, 10])
    );
    let set_cookie = |d: usize| {
        http[2]["route"][d]["headers"]["response"]["add"]["Set-Cookie"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(set_cookie(1).starts_with("canary=") && set_cookie(1).ends_with("; Max-Age=120"));
    assert!(set_cookie(0).starts_with("primary=") && set_cookie(0).ends_with("; Max-Age=20"));
    assert_eq!(
        IstioRouter.traffic(&c, vs),
        Some(Traffic::Split(Weights::canary(10)))
    );

    let vs = &IstioRouter
        .desired(&c, Traffic::Split(Weights::canary(0)))
        .unwrap()[0];
    let http = vs.data["spec"]["http"].as_array().unwrap();
    assert_eq!(http.len(), 2);
    let expire = http[0]["headers"]["response"]["add"]["Set-Cookie"]
        .as_str()
        .unwrap();
    assert!(
        expire.starts_with("canary=") && expire.ends_with("; Max-Age=0"),
        "{expire}"
    );
    assert_eq!(http[0]["route"][0]["weight"], json!(100));
    assert_eq!(
        IstioRouter.traffic(&c, vs),
        Some(Traffic::Split(Weights::canary(0)))
    );
}
