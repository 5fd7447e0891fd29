//! The Services a Canary uses: the apex `<service>` that clients call and `<service>-primary`, both on the
//! primary's pods, and `<service>-canary` on the canary's (the target's) pods.
//!
//! Serin creates the three and owns them. An apex Service that exists already (the user's own, applied
//! from git before the Canary) is taken over as Flagger does: its selector is pointed at the primary and
//! the Canary's ports are set on it, everything else is left as it is, and it is annotated so that Flux
//! and Helm leave it alone while the Canary runs. Its original selector is recorded on it, to be given back
//! when the Canary is deleted with revertOnDeletion.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::ServiceNames;
use crate::api::Canary;
use crate::api::canary::CustomMetadata;
use crate::workload::primary::Labels;

/// The annotations that make Flux's kustomize-controller and helm-controller leave an object alone (the
/// values Flagger sets).
pub const GITOPS_HANDS_OFF: [(&str, &str); 2] = [
    ("kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
    ("helm.toolkit.fluxcd.io/driftDetection", "disabled"),
];
/// On an apex Service Serin took over: the selector it had before, as JSON.
pub const ORIGINAL_SELECTOR: &str = "serin.dev/original-selector";

/// Container names of mesh proxies, whose ports are never exposed by port discovery (as Flagger).
const PROXY_CONTAINERS: [&str; 2] = ["istio-proxy", "envoy"];

/// The Services' ports: the Canary's port, and with portDiscovery every other port of the target's
/// containers.
pub fn ports(canary: &Canary, template: Option<&PodTemplateSpec>) -> Vec<ServicePort> {
    let s = &canary.spec.service;
    let target_port = match &s.target_port {
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map_or(IntOrString::Int(s.port), IntOrString::Int),
        Some(Value::String(name)) => IntOrString::String(name.clone()),
        _ => IntOrString::Int(s.port),
    };
    let mut ports = vec![ServicePort {
        name: Some(s.port_name.clone().unwrap_or_else(|| "http".into())),
        port: s.port,
        target_port: Some(target_port.clone()),
        protocol: Some("TCP".into()),
        app_protocol: s.app_protocol.clone(),
        ..ServicePort::default()
    }];
    if s.port_discovery {
        let containers: &[Container] = template
            .and_then(|t| t.spec.as_ref())
            .map_or(&[], |spec| &spec.containers);
        for c in containers
            .iter()
            .filter(|c| !PROXY_CONTAINERS.contains(&c.name.as_str()))
        {
            for (i, p) in c.ports.iter().flatten().enumerate() {
                let is_main = match &target_port {
                    IntOrString::Int(n) => p.container_port == *n,
                    IntOrString::String(name) => p.name.as_ref() == Some(name),
                };
                let taken = ports.iter().any(|q| q.port == p.container_port);
                if is_main || taken || p.protocol.as_deref().is_some_and(|x| x != "TCP") {
                    continue;
                }
                ports.push(ServicePort {
                    name: Some(
                        p.name
                            .clone()
                            .unwrap_or_else(|| format!("tcp-{}-{i}", c.name)),
                    ),
                    port: p.container_port,
                    target_port: Some(IntOrString::Int(p.container_port)),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                });
            }
        }
    }
    ports
}

/// The three Services, as Serin creates them.
pub fn services(
    canary: &Canary,
    target_selector: &Labels,
    primary_selector: &Labels,
    ports: &[ServicePort],
) -> Vec<Service> {
    let names = ServiceNames::of(canary);
    let s = &canary.spec.service;
    let make = |name: &str, selector: &Labels, extra: Option<&CustomMetadata>| Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: canary.namespace(),
            labels: extra.map(|m| m.labels.clone()).filter(|l| !l.is_empty()),
            annotations: extra
                .map(|m| m.annotations.clone())
                .filter(|a| !a.is_empty()),
            owner_references: canary.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector.clone()),
            ports: Some(ports.to_vec()),
            type_: Some("ClusterIP".into()),
            cluster_ip: s.headless.then(|| "None".into()),
            traffic_distribution: s.traffic_distribution.clone(),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    vec![
        make(&names.apex, primary_selector, s.apex.as_ref()),
        make(&names.primary, primary_selector, s.primary.as_ref()),
        make(&names.canary, target_selector, s.canary.as_ref()),
    ]
}

/// `<name>-primary`, the copy of a StatefulSet target's governing Service for its primary: the same
/// Service (headless or not, its ports) on the primary's pods, owned by the Canary.
pub fn governing_copy(
    canary: &Canary,
    source: &Service,
    name: &str,
    primary_selector: &Labels,
) -> Value {
    let spec = source.spec.clone().unwrap_or_default();
    let mut copy = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": source.namespace(),
            "ownerReferences": canary.controller_owner_ref(&()).into_iter().collect::<Vec<_>>()},
        "spec": {"selector": primary_selector, "ports": spec.ports.unwrap_or_default()}});
    if spec.cluster_ip.as_deref() == Some("None") {
        copy["spec"]["clusterIP"] = json!("None");
    }
    if let Some(p) = spec.publish_not_ready_addresses {
        copy["spec"]["publishNotReadyAddresses"] = json!(p);
    }
    copy
}

/// Whether an existing apex Service may be taken over: nothing controls it (no controller owner).
pub fn can_take_over(existing: &Service) -> bool {
    !existing
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true))
}

/// The apply that takes over the existing apex Service: selector on the primary's pods, the Canary's
/// ports, hands-off annotations for Flux and Helm, and the original selector recorded (once).
pub fn take_over(existing: &Service, primary_selector: &Labels, ports: &[ServicePort]) -> Value {
    let original = existing
        .annotations()
        .get(ORIGINAL_SELECTOR)
        .cloned()
        .unwrap_or_else(|| {
            serde_json::to_string(
                &existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.clone())
                    .unwrap_or_default(),
            )
            .unwrap_or_default()
        });
    let mut annotations: BTreeMap<String, String> = GITOPS_HANDS_OFF
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    annotations.insert(ORIGINAL_SELECTOR.into(), original);
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": existing.name_any(), "namespace": existing.namespace(), "annotations": annotations},
        "spec": {"selector": primary_selector, "ports": ports}})
}

/// Whether Serin took this Service over (rather than created it).
pub fn taken_over(existing: &Service) -> bool {
    existing.annotations().contains_key(ORIGINAL_SELECTOR)
}

/// The apply that gives a taken-over apex Service back: its original selector (or, when it was not
/// recorded, the target's), the hands-off annotations gone, so the user's GitOps tool owns it again.
pub fn give_back(existing: &Service, target_selector: &Labels, ports: &[ServicePort]) -> Value {
    let selector: Labels = existing
        .annotations()
        .get(ORIGINAL_SELECTOR)
        .and_then(|s| serde_json::from_str(s).ok())
        .filter(|s: &Labels| !s.is_empty())
        .unwrap_or_else(|| target_selector.clone());
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": existing.name_any(), "namespace": existing.namespace()},
        "spec": {"selector": selector, "ports": ports}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apex_and_primary_select_the_primary_and_canary_the_target() {
        let canary: Canary = serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo", "namespace": "apps", "uid": "u"},
            "spec": {"targetRef": {"name": "podinfo"}, "service": {"port": 80, "targetPort": "http", "apex": {"labels": {"tier": "edge"}}}}
        }))
        .unwrap();
        let target = Labels::from([("app".into(), "podinfo".into())]);
        let primary = Labels::from([("app".into(), "podinfo-primary".into())]);
        let svcs = services(&canary, &target, &primary, &ports(&canary, None));
        let summary: Vec<(String, String)> = svcs
            .iter()
            .map(|s| {
                (
                    s.name_any(),
                    s.spec.as_ref().unwrap().selector.as_ref().unwrap()["app"].clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("podinfo".into(), "podinfo-primary".into()),
                ("podinfo-primary".into(), "podinfo-primary".into()),
                ("podinfo-canary".into(), "podinfo".into())
            ]
        );
        let port = &svcs[0].spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.target_port.clone()),
            (Some("http"), 80, Some(IntOrString::String("http".into())))
        );
        assert_eq!(
            svcs[0].labels().get("tier").map(String::as_str),
            Some("edge")
        );
        assert!(svcs[1].metadata.labels.is_none());
    }

    fn canary(service: Value) -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo", "namespace": "apps", "uid": "u"},
            "spec": {"targetRef": {"name": "podinfo"}, "service": service}
        }))
        .unwrap()
    }

    #[test]
    fn port_discovery_adds_every_other_tcp_port_but_the_proxies() {
        let template: PodTemplateSpec = serde_json::from_value(json!({"spec": {"containers": [
            {"name": "podinfo", "ports": [{"name": "http", "containerPort": 9898}, {"containerPort": 9797},
                {"name": "grpc", "containerPort": 9999}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
            {"name": "istio-proxy", "ports": [{"name": "http-envoy-prom", "containerPort": 15090}]}]}}))
        .unwrap();
        let c = canary(
            json!({"port": 80, "targetPort": "http", "portDiscovery": true, "appProtocol": "http"}),
        );
        let got: Vec<(String, i32, IntOrString)> = ports(&c, Some(&template))
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.target_port.unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("http".into(), 80, IntOrString::String("http".into())),
                ("tcp-podinfo-1".into(), 9797, IntOrString::Int(9797)),
                ("grpc".into(), 9999, IntOrString::Int(9999)),
            ]
        );
        assert_eq!(
            ports(&c, Some(&template))[0].app_protocol.as_deref(),
            Some("http")
        );
        let plain = canary(json!({"port": 80, "targetPort": "http"}));
        assert_eq!(ports(&plain, Some(&template)).len(), 1);
    }

    #[test]
    fn headless_services_have_no_cluster_ip() {
        let c = canary(json!({"port": 80, "headless": true}));
        let l = Labels::from([("app".into(), "podinfo".into())]);
        for svc in services(&c, &l, &l, &ports(&c, None)) {
            assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
        }
    }

    #[test]
    fn an_existing_apex_is_taken_over_and_given_back_as_it_was() {
        let users: Service = serde_json::from_value(json!({"metadata": {"name": "podinfo", "namespace": "apps",
            "annotations": {"team.example.com/owner": "web"}},
            "spec": {"type": "NodePort", "sessionAffinity": "ClientIP", "selector": {"app": "podinfo", "tier": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 9898, "nodePort": 30080}]}}))
        .unwrap();
        assert!(can_take_over(&users));
        let c = canary(json!({"port": 80, "targetPort": 9898}));
        let primary = Labels::from([("app".into(), "podinfo-primary".into())]);
        let want = take_over(&users, &primary, &ports(&c, None));
        assert_eq!(
            want,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo", "namespace": "apps",
                "annotations": {"kustomize.toolkit.fluxcd.io/reconcile": "disabled",
                    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
                    "serin.dev/original-selector": r#"{"app":"podinfo","tier":"web"}"#}},
                "spec": {"selector": {"app": "podinfo-primary"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 9898, "protocol": "TCP"}]}})
        );
        // Once taken over, the recorded selector is kept, not replaced by the primary's.
        let mut taken: Service = users.clone();
        taken.metadata.annotations =
            serde_json::from_value(want["metadata"]["annotations"].clone()).unwrap();
        taken.spec.as_mut().unwrap().selector = Some(primary.clone());
        assert!(taken_over(&taken) && !taken_over(&users));
        assert_eq!(take_over(&taken, &primary, &ports(&c, None)), want);
        let back = give_back(
            &taken,
            &Labels::from([("app".into(), "podinfo".into())]),
            &ports(&c, None),
        );
        assert_eq!(
            back["spec"]["selector"],
            json!({"app": "podinfo", "tier": "web"})
        );
        assert_eq!(back["metadata"].get("annotations"), None);
        // A Service something else controls is not taken.
        let mut controlled = users.clone();
        controlled.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({"apiVersion": "v1",
            "kind": "Other", "name": "x", "uid": "o", "controller": true}))
            .unwrap(),
        ]);
        assert!(!can_take_over(&controlled));
    }
}
