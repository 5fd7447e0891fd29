//! Specs the core cannot run, or runs only in part, and how it says so.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::api::Provider;
use crate::decision::*;

#[test]
fn an_interval_below_the_controller_minimum_is_an_invalid_spec() {
    let mut w = World::new(spec(json!({"interval": "1s", "stepWeight": 10})));
    w.o.defaults.min_interval = Duration::from_secs(10);
    let d = w.tick(None);
    assert_eq!(
        d.desired,
        Desired {
            bootstrap: false,
            apex: false,
            create_primary: None,
            primary_configs: false,
            promote_primary: None,
            canary_scale: Scale::Keep,
            traffic: None
        }
    );
    let (stalled, message) = w.condition("Stalled");
    assert_eq!(stalled, "True");
    assert!(
        message.contains("spec.analysis.interval") && message.contains("minimum"),
        "{message}"
    );
    assert_eq!(d.events[0].reason, Reason::InvalidSpec);
    assert!(w.o.status.phase.is_none());
}

#[test]
fn specs_the_core_cannot_run_say_why() {
    let cases = [
        (json!({"interval": "10s"}), "set stepWeight or stepWeights"),
        (
            json!({"interval": "10s", "stepWeight": 10, "match": [{"headers": {}}]}),
            "A/B testing needs iterations",
        ),
        (
            json!({"interval": "10s", "stepWeight": 10, "metrics": [{"name": "my-check"}]}),
            "spec.analysis.metrics[0]",
        ),
    ];
    for (analysis, expected) in cases {
        let mut w = World::new(spec(analysis));
        w.tick(None);
        let message = w.condition("Stalled").1;
        assert!(
            message.contains(expected),
            "{message} should say {expected}"
        );
    }
    let mut s = spec(json!({"interval": "10s", "stepWeight": 10}));
    s.provider = Some(Provider::Gloo);
    let mut w = World::new(s);
    let d = w.tick(None);
    assert_eq!(d.events[0].reason, Reason::NotSupported);
    assert!(
        w.condition("Stalled")
            .1
            .contains("gloo is not supported yet")
    );
}

#[test]
fn fields_not_acted_on_yet_are_named() {
    let mut s = spec(json!({"interval": "10s", "stepWeight": 10,
        "sessionAffinity": {"cookieName": "canary"}}));
    s.provider = Some(Provider::Contour);
    let mut w = World::new(s.clone());
    w.tick(None);
    let (status, message) = w.condition("Unsupported");
    assert_eq!(status, "True");
    assert!(
        message.contains("spec.analysis.sessionAffinity"),
        "{message}"
    );
    // Gateway API and Istio keep users on the revision they reached.
    for provider in [Provider::GatewayApi, Provider::Istio] {
        s.provider = Some(provider);
        let mut w = World::new(s.clone());
        w.tick(None);
        assert!(
            !w.o.status
                .conditions
                .iter()
                .any(|c| c.type_ == "Unsupported"),
            "{provider:?}"
        );
    }
}

#[test]
fn the_service_fields_istio_acts_on_are_not_named_for_istio() {
    let with_istio_fields = |provider: Provider| {
        let mut s = spec(json!({"interval": "10s", "stepWeight": 10}));
        s.provider = Some(provider);
        s.service.timeout = Some("30s".into());
        s.service.gateways = vec!["public".into()];
        s.service.traffic_policy = Some(json!({"tls": {"mode": "ISTIO_MUTUAL"}}));
        let mut w = World::new(s);
        w.tick(None);
        w.o.status
            .conditions
            .iter()
            .find(|c| c.type_ == "Unsupported")
            .and_then(|c| c.message.clone())
    };
    let message = with_istio_fields(Provider::GatewayApi).unwrap_or_default();
    assert!(message.contains("spec.service.gateways"), "{message}");
    assert!(message.contains("spec.service.trafficPolicy"), "{message}");
    assert_eq!(with_istio_fields(Provider::Istio), None);
}

#[test]
fn a_grpc_route_needs_a_gateway_api_provider_and_no_cookies() {
    let mut s = spec(json!({"interval": "10s", "stepWeight": 10}));
    s.service.route_kind = Some(crate::api::canary::RouteKind::GrpcRoute);
    s.provider = Some(Provider::Istio);
    let mut w = World::new(s.clone());
    w.tick(None);
    let (_, message) = w.condition("Stalled");
    assert!(message.contains("spec.service.routeKind"), "{message}");
    s.provider = Some(Provider::GatewayApi);
    if let Some(a) = s.analysis.as_mut() {
        a.session_affinity = serde_json::from_value(json!({"cookieName": "canary"})).unwrap();
    }
    let mut w = World::new(s);
    w.tick(None);
    let (_, message) = w.condition("Stalled");
    assert!(
        message.contains("spec.analysis.sessionAffinity"),
        "{message}"
    );
}
