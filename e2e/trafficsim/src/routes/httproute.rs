//! Gateway API HTTPRoute (gateway.networking.k8s.io/v1): the fields a data plane needs to split traffic.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{RouteObject, RouteSettings};
use crate::model::{
    BackendTarget, HeaderMatch, MirrorTarget, Precedence, RequestMatch, ServiceKey, SimRoute,
    SimRule, WeightedBackend,
};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub matches: Vec<Match>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default)]
    pub filters: Vec<serde_json::Value>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Match {
    #[serde(default)]
    pub headers: Vec<HeaderCondition>,
    /// A GRPCRoute's gRPC service and method: not simulated (the simulator's requests have none).
    #[serde(default)]
    pub method: Option<serde_json::Value>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeaderCondition {
    #[serde(rename = "type", default)]
    pub match_type: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub filters: Vec<serde_json::Value>,
}

impl RouteObject for HTTPRoute {
    const PROVIDER: &'static str = "gatewayapi";

    fn to_sim_route(&self, settings: RouteSettings) -> Result<SimRoute, String> {
        gateway_route(Self::PROVIDER, &self.metadata, &self.spec.rules, settings)
    }
}

/// A Gateway API route (an HTTPRoute, a GRPCRoute) as the simulator runs it.
pub(super) fn gateway_route(
    provider: &'static str,
    metadata: &kube::api::ObjectMeta,
    rules: &[Rule],
    settings: RouteSettings,
) -> Result<SimRoute, String> {
    let namespace = metadata.namespace.clone().unwrap_or_default();
    Ok(SimRoute {
        provider,
        name: metadata.name.clone().unwrap_or_default(),
        rules: sim_rules(rules, &namespace)?,
        namespace,
        rps: settings.rps,
        request_mix: settings.request_mix,
        precedence: Precedence::MostSpecific,
        proxy: None,
        clients: settings.clients,
    })
}

/// Gateway API rules (an HTTPRoute's, a GRPCRoute's) as the simulator runs them.
fn sim_rules(rules: &[Rule], namespace: &str) -> Result<Vec<SimRule>, String> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let matches = rule
                .matches
                .iter()
                .map(|m| {
                    if m.method.as_ref().is_some_and(serde_json::Value::is_object) {
                        return Err(format!(
                            "spec.rules[{i}].matches: a gRPC method match is not simulated"
                        ));
                    }
                    let headers = m.headers.iter().map(header_match).collect::<Result<_, _>>();
                    headers
                        .map(|headers| RequestMatch { headers })
                        .map_err(|e| format!("spec.rules[{i}].matches: {e}"))
                })
                .collect::<Result<_, _>>()?;
            let backends = rule
                .backend_refs
                .iter()
                .map(|b| backend(b, namespace))
                .collect();
            let mirrors = rule
                .filters
                .iter()
                .filter(|f| f["type"] == "RequestMirror")
                .map(|f| mirror(&f["requestMirror"], namespace))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("spec.rules[{i}].filters: {e}"))?;
            Ok(SimRule {
                matches,
                backends,
                mirrors,
                set_cookie: set_cookie(&rule.filters),
            })
        })
        .collect()
}

fn header_match(h: &HeaderCondition) -> Result<HeaderMatch, String> {
    let name = h.name.to_ascii_lowercase();
    match h.match_type.as_deref().unwrap_or("Exact") {
        "Exact" => Ok(HeaderMatch::Exact {
            name,
            value: h.value.clone(),
        }),
        "RegularExpression" => HeaderMatch::whole_value(&name, &h.value),
        other => Err(format!(
            "header {} match type {other:?} is not Exact or RegularExpression",
            h.name
        )),
    }
}

fn backend(b: &BackendRef, route_namespace: &str) -> WeightedBackend {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    let target = if group.is_empty() && kind == "Service" {
        BackendTarget::Service(ServiceKey {
            namespace: b
                .namespace
                .clone()
                .unwrap_or_else(|| route_namespace.to_string()),
            name: b.name.clone(),
        })
    } else {
        BackendTarget::Unsupported(format!("{kind}.{group}/{}", b.name))
    };
    // Gateway API's default weight is 1.
    WeightedBackend {
        target,
        weight: b.weight.unwrap_or(1),
        set_cookie: set_cookie(&b.filters),
    }
}

/// The `Set-Cookie` a ResponseHeaderModifier filter adds (or sets) on answers.
fn set_cookie(filters: &[serde_json::Value]) -> Option<String> {
    filters
        .iter()
        .filter(|f| f["type"] == "ResponseHeaderModifier")
        .flat_map(|f| {
            let m = &f["responseHeaderModifier"];
            [&m["add"], &m["set"]]
                .into_iter()
                .filter_map(serde_json::Value::as_array)
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
        })
        .find(|h| {
            h["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("set-cookie"))
        })
        .and_then(|h| h["value"].as_str().map(str::to_string))
}

/// A RequestMirror filter: its Service, and the share copied (`percent`, or `fraction`; all by default).
fn mirror(m: &serde_json::Value, namespace: &str) -> Result<MirrorTarget, String> {
    let backend = &m["backendRef"];
    if backend["kind"].as_str().is_some_and(|k| k != "Service") {
        return Err(format!(
            "a mirror to a {} is not simulated",
            backend["kind"]
        ));
    }
    let name = backend["name"]
        .as_str()
        .ok_or("a RequestMirror without a backendRef name")?;
    let percent = if let Some(p) = m["percent"].as_f64() {
        p
    } else if let Some(n) = m["fraction"]["numerator"].as_f64() {
        let d = m["fraction"]["denominator"].as_f64().unwrap_or(100.0);
        if d <= 0.0 {
            return Err("a fraction with a denominator of 0".into());
        }
        n / d * 100.0
    } else {
        100.0
    };
    Ok(MirrorTarget {
        service: ServiceKey {
            namespace: backend["namespace"]
                .as_str()
                .unwrap_or(namespace)
                .to_string(),
            name: name.to_string(),
        },
        percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn route(json: serde_json::Value) -> HTTPRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": "apps"}, "spec": json
        }))
        .unwrap()
    }

    #[test]
    fn weights_and_namespaces_default_as_gateway_api_says() {
        let r = route(serde_json::json!({"rules": [{"backendRefs": [
            {"name": "podinfo-primary", "port": 9898, "weight": 90},
            {"name": "podinfo-canary", "namespace": "other", "port": 9898}
        ]}]}))
        .to_sim_route(RouteSettings::for_tests())
        .unwrap();
        assert_eq!(r.provider, "gatewayapi");
        let b = &r.rules[0].backends;
        assert_eq!(
            b[0],
            WeightedBackend {
                target: BackendTarget::Service(ServiceKey {
                    namespace: "apps".into(),
                    name: "podinfo-primary".into()
                }),
                weight: 90,
                set_cookie: None,
            }
        );
        assert_eq!(
            b[1],
            WeightedBackend {
                target: BackendTarget::Service(ServiceKey {
                    namespace: "other".into(),
                    name: "podinfo-canary".into()
                }),
                weight: 1,
                set_cookie: None,
            }
        );
    }

    #[test]
    fn header_matches_exact_and_regex() {
        let r = route(serde_json::json!({"rules": [{"matches": [{"headers": [
            {"name": "X-Canary", "value": "insider"},
            {"type": "RegularExpression", "name": "cookie", "value": ".*canary=always.*"}
        ]}], "backendRefs": [{"name": "podinfo-canary"}]}]}))
        .to_sim_route(RouteSettings::for_tests())
        .unwrap();
        let m = &r.rules[0].matches[0];
        let headers = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(m.holds(&headers(&[
            ("x-canary", "insider"),
            ("cookie", "a=b; canary=always")
        ])));
        assert!(!m.holds(&headers(&[
            ("x-canary", "insider"),
            ("cookie", "canary=never")
        ])));
        assert!(!m.holds(&headers(&[("cookie", "canary=always")])));
    }

    #[test]
    fn other_backend_kinds_are_unsupported_and_bad_regexes_are_errors() {
        let r = route(serde_json::json!({"rules": [{"backendRefs": [{"group": "example.com", "kind": "Bucket", "name": "b"}]}]}))
            .to_sim_route(RouteSettings::for_tests())
            .unwrap();
        assert!(
            matches!(&r.rules[0].backends[0].target, BackendTarget::Unsupported(s) if s == "Bucket.example.com/b")
        );
        let e = route(serde_json::json!({"rules": [{"matches": [{"headers": [{"type": "RegularExpression", "name": "x", "value": "("}]}]}]}))
            .to_sim_route(RouteSettings::for_tests())
            .unwrap_err();
        assert!(
            e.starts_with("spec.rules[0].matches: header x regex"),
            "{e}"
        );
    }

    #[test]
    fn cookies_set_by_a_rule_or_a_backend_are_read() {
        let route: HTTPRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"rules": [
                {"filters": [{"type": "ResponseHeaderModifier",
                    "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": "canary=abc; Max-Age=0"}]}}],
                 "backendRefs": [{"name": "podinfo-primary", "weight": 100}]},
                {"backendRefs": [{"name": "podinfo-primary", "weight": 90},
                    {"name": "podinfo-canary", "weight": 10, "filters": [{"type": "ResponseHeaderModifier",
                        "responseHeaderModifier": {"set": [{"name": "set-cookie", "value": "canary=abc; Max-Age=60"}]}}]}]}]}
        }))
        .unwrap();
        let r = route.to_sim_route(RouteSettings::for_tests()).unwrap();
        assert_eq!(
            r.rules[0].set_cookie.as_deref(),
            Some("canary=abc; Max-Age=0")
        );
        assert_eq!(r.rules[1].backends[0].set_cookie, None);
        assert_eq!(
            r.rules[1].backends[1].set_cookie.as_deref(),
            Some("canary=abc; Max-Age=60")
        );
    }
}
