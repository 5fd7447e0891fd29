//! The Services a Canary owns: the apex `<service>` that clients call and `<service>-primary`, both on the
//! primary's pods, and `<service>-canary` on the canary's (the target's) pods.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_json::Value;

use super::ServiceNames;
use crate::api::Canary;
use crate::api::canary::CustomMetadata;
use crate::workload::primary::Labels;

/// The three Services, as Serin applies them.
pub fn services(
    canary: &Canary,
    target_selector: &Labels,
    primary_selector: &Labels,
) -> Vec<Service> {
    let names = ServiceNames::of(canary);
    let s = &canary.spec.service;
    let target_port = match &s.target_port {
        Some(Value::Number(n)) => n
            .as_i64()
            .map_or(IntOrString::Int(s.port), |n| IntOrString::Int(n as i32)),
        Some(Value::String(name)) => IntOrString::String(name.clone()),
        _ => IntOrString::Int(s.port),
    };
    let port = ServicePort {
        name: Some(s.port_name.clone().unwrap_or_else(|| "http".into())),
        port: s.port,
        target_port: Some(target_port),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
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
            ports: Some(vec![port.clone()]),
            type_: Some("ClusterIP".into()),
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
        let svcs = services(&canary, &target, &primary);
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
}
