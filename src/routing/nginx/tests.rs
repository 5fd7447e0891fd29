//! Golden canary Ingresses from the user's, and the traffic read back from their annotations.

use std::sync::Arc;

use super::*;

fn canary(analysis: Value) -> Canary {
    serde_json::from_value(json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
        "spec": {"provider": "nginx", "targetRef": {"name": "podinfo"}, "ingressRef": {"name": "podinfo"},
            "service": {"port": 9898}, "analysis": analysis}
    }))
    .unwrap()
}

/// The user's Ingress, as the cache holds it.
fn users_ingress() -> Vec<(ApiResource, Arc<DynamicObject>)> {
    let mut o = DynamicObject::new("podinfo", &ingresses());
    o.metadata.namespace = Some("test".into());
    o.metadata.labels = Some([("app".to_string(), "podinfo".to_string())].into());
    o.metadata.annotations = Some(
        [
            (
                "kubernetes.io/ingress.class".to_string(),
                "nginx".to_string(),
            ),
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            ),
        ]
        .into(),
    );
    o.data = json!({"spec": {"ingressClassName": "nginx", "rules": [{"host": "app.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}}]}}]}});
    vec![(ingresses(), Arc::new(o))]
}

#[test]
fn the_canary_ingress_copies_the_users_with_the_canary_backend_and_weight() {
    let c = canary(json!({"stepWeight": 10}));
    let objects = NginxRouter::default()
        .desired_from(&c, Traffic::Split(Weights::canary(30)), &users_ingress())
        .unwrap();
    assert_eq!(objects.len(), 1, "the user's Ingress is never written");
    let ing = &objects[0];
    assert_eq!(ing.metadata.name.as_deref(), Some("podinfo-canary"));
    assert_eq!(
        ing.metadata.owner_references.as_ref().unwrap()[0].kind,
        "Canary"
    );
    assert_eq!(ing.labels()["app"], "podinfo");
    assert_eq!(
        ing.annotations().clone(),
        BTreeMap::from([
            (
                "kubernetes.io/ingress.class".to_string(),
                "nginx".to_string()
            ),
            (
                "nginx.ingress.kubernetes.io/canary".to_string(),
                "true".to_string()
            ),
            (
                "nginx.ingress.kubernetes.io/canary-weight".to_string(),
                "30".to_string()
            ),
        ])
    );
    assert_eq!(
        ing.data["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"],
        json!({"name": "podinfo-canary", "port": {"number": 9898}})
    );
    assert_eq!(ing.data["spec"]["ingressClassName"], "nginx");
    assert_eq!(
        NginxRouter::default().traffic(&c, ing),
        Some(Traffic::Split(Weights::canary(30)))
    );
}

#[test]
fn ab_sets_the_header_or_cookie_annotations() {
    let c = canary(json!({"iterations": 3, "match": [
        {"headers": {"x-canary": {"exact": "insider"}}},
        {"headers": {"cookie": {"exact": "canary"}}}]}));
    let ing = &NginxRouter::default()
        .desired_from(&c, Traffic::Matched, &users_ingress())
        .unwrap()[0];
    let a = ing.annotations();
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header"],
        "x-canary"
    );
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header-value"],
        "insider"
    );
    assert_eq!(a["nginx.ingress.kubernetes.io/canary-by-cookie"], "canary");
    assert!(!a.contains_key("nginx.ingress.kubernetes.io/canary-weight"));
    assert_eq!(
        NginxRouter::default().traffic(&c, ing),
        Some(Traffic::Matched)
    );

    let c =
        canary(json!({"iterations": 3, "match": [{"headers": {"x-canary": {"regex": "^in.*"}}}]}));
    let ing = &NginxRouter::default()
        .desired_from(&c, Traffic::Matched, &users_ingress())
        .unwrap()[0];
    assert_eq!(
        ing.annotations()["nginx.ingress.kubernetes.io/canary-by-header-pattern"],
        "^in.*"
    );
    let c =
        canary(json!({"iterations": 3, "match": [{"headers": {"x-canary": {"prefix": "in"}}}]}));
    let err = NginxRouter::default()
        .desired_from(&c, Traffic::Matched, &users_ingress())
        .unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");
}

#[test]
fn a_missing_reference_or_backend_is_named() {
    let mut c = canary(json!({}));
    let err = NginxRouter::default()
        .desired_from(&c, Traffic::Split(Weights::canary(0)), &[])
        .unwrap_err();
    assert!(
        err.to_string().contains("Ingress test/podinfo not found"),
        "{err}"
    );
    c.spec.service.name = Some("other".into());
    let err = NginxRouter::default()
        .desired_from(&c, Traffic::Split(Weights::canary(0)), &users_ingress())
        .unwrap_err();
    assert!(
        err.to_string().contains("no backend on Service other"),
        "{err}"
    );
    c.spec.ingress_ref = None;
    let err = NginxRouter::default()
        .desired(&c, Traffic::Split(Weights::canary(0)))
        .unwrap_err();
    assert!(err.to_string().contains("spec.ingressRef"), "{err}");
    assert!(NginxRouter::default().objects(&c).is_empty());
}

#[test]
fn weights_are_read_back_from_the_annotations() {
    let c = canary(json!({}));
    let mut ing = DynamicObject::new("podinfo-canary", &ingresses());
    ing.metadata.annotations = Some(
        [
            (
                "nginx.ingress.kubernetes.io/canary".to_string(),
                "true".to_string(),
            ),
            (
                "nginx.ingress.kubernetes.io/canary-weight".to_string(),
                "45".to_string(),
            ),
        ]
        .into(),
    );
    assert_eq!(
        NginxRouter::default().traffic(&c, &ing),
        Some(Traffic::Split(Weights::canary(45)))
    );
    // Not a canary Ingress (any more): nothing goes to the canary.
    ing.metadata.annotations = Some(BTreeMap::new());
    assert_eq!(
        NginxRouter::default().traffic(&c, &ing),
        Some(Traffic::Split(Weights::canary(0)))
    );
}

/// `--ingress-annotations-prefix`: the canary Ingress's annotations, and its weight read back, use the
/// ingress controller's prefix.
#[test]
fn annotations_use_the_configured_prefix() {
    let router = NginxRouter::with_prefix("ingress.example.com/");
    let c = canary(json!({"stepWeight": 10}));
    let ing = &router
        .desired_from(&c, Traffic::Split(Weights::canary(30)), &users_ingress())
        .unwrap()[0];
    let a = ing.annotations();
    assert_eq!(
        a.get("ingress.example.com/canary").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        a.get("ingress.example.com/canary-weight")
            .map(String::as_str),
        Some("30")
    );
    assert!(!a.keys().any(|k| k.starts_with(PREFIX)), "{a:?}");
    assert_eq!(
        router.traffic(&c, ing),
        Some(Traffic::Split(Weights::canary(30)))
    );
}
