//! Istio VirtualService (networking.istio.io/v1): HTTP routes taken in order, each a list of matches on
//! headers (exact, prefix, regex) and weighted destinations. The simulator's requests all go to `/`, so a
//! `uri` condition other than the `/` prefix, or any other condition, is not simulated (the route is
//! skipped with a warning). TCP routes are not simulated: Istio's TCP series are not the request series.

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RouteObject, RouteSettings};
use crate::model::{
    BackendTarget, HeaderMatch, MirrorTarget, Precedence, RequestMatch, ServiceKey, SimRoute,
    SimRule, WeightedBackend,
};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    namespaced,
    schema = "disabled"
)]
pub struct VirtualServiceSpec {
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    pub tcp: Vec<Value>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct HttpRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<BTreeMap<String, Value>>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
    #[serde(default)]
    pub mirror: Option<Destination>,
    #[serde(default, rename = "mirrorPercentage")]
    pub mirror_percentage: Option<Percent>,
    #[serde(default)]
    pub headers: Option<Value>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub headers: Option<Value>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct Destination {
    pub host: String,
}

impl RouteObject for VirtualService {
    const PROVIDER: &'static str = "istio";

    fn to_sim_route(&self, settings: RouteSettings) -> Result<SimRoute, String> {
        let namespace = self.metadata.namespace.clone().unwrap_or_default();
        if self.spec.http.is_empty() && !self.spec.tcp.is_empty() {
            return Err("spec.tcp: TCP routes are not simulated".into());
        }
        let rules = self
            .spec
            .http
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let matches = route
                    .matches
                    .iter()
                    .map(|m| request_match(m).map_err(|e| format!("spec.http[{i}].match: {e}")))
                    .collect::<Result<_, _>>()?;
                // One destination without a weight takes everything; with several, a missing one is 0.
                let alone = route.route.len() == 1;
                let backends = route
                    .route
                    .iter()
                    .map(|d| WeightedBackend {
                        target: BackendTarget::Service(service(&d.destination.host, &namespace)),
                        weight: d.weight.unwrap_or(if alone { 100 } else { 0 }),
                        set_cookie: set_cookie(d.headers.as_ref()),
                    })
                    .collect();
                // Istio copies every request to the mirror when no percentage is given.
                let mirrors = route
                    .mirror
                    .iter()
                    .map(|m| MirrorTarget {
                        service: service(&m.host, &namespace),
                        percent: route.mirror_percentage.as_ref().map_or(100.0, |p| p.value),
                    })
                    .collect();
                Ok(SimRule {
                    matches,
                    backends,
                    mirrors,
                    set_cookie: set_cookie(route.headers.as_ref()),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(SimRoute {
            provider: Self::PROVIDER,
            name: self.metadata.name.clone().unwrap_or_default(),
            namespace,
            rules,
            rps: settings.rps,
            request_mix: settings.request_mix,
            precedence: Precedence::FirstMatch,
            proxy: None,
            clients: settings.clients,
        })
    }
}

/// A destination host as Istio resolves it: a short name in the VirtualService's namespace, or
/// `<name>.<namespace>[.svc[.cluster.local]]`.
fn service(host: &str, namespace: &str) -> ServiceKey {
    let host = host.strip_suffix(".cluster.local").unwrap_or(host);
    let host = host.strip_suffix(".svc").unwrap_or(host);
    match host.split_once('.') {
        Some((name, ns)) => ServiceKey {
            namespace: ns.into(),
            name: name.into(),
        },
        None => ServiceKey {
            namespace: namespace.into(),
            name: host.into(),
        },
    }
}

/// The `Set-Cookie` Istio's `headers.response` adds (or sets) on answers.
fn set_cookie(headers: Option<&Value>) -> Option<String> {
    let response = headers?.get("response")?;
    ["add", "set"]
        .into_iter()
        .filter_map(|op| response.get(op)?.as_object())
        .flatten()
        .find(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .and_then(|(_, v)| v.as_str().map(str::to_string))
}

fn request_match(m: &BTreeMap<String, Value>) -> Result<RequestMatch, String> {
    let mut headers = Vec::new();
    for (key, value) in m {
        match key.as_str() {
            "headers" => {
                let Some(conditions) = value.as_object() else {
                    return Err("headers is not a map".into());
                };
                for (name, condition) in conditions {
                    headers.push(header_match(&name.to_ascii_lowercase(), condition)?);
                }
            }
            "uri" if value.get("prefix").and_then(Value::as_str) == Some("/") => {}
            // Names a match for the documentation; no condition.
            "name" => {}
            other => return Err(format!("condition {other} is not simulated")),
        }
    }
    Ok(RequestMatch { headers })
}

fn header_match(name: &str, condition: &Value) -> Result<HeaderMatch, String> {
    let text = |k: &str| condition.get(k).and_then(Value::as_str);
    let regex = |pattern: String| HeaderMatch::whole_value(name, &pattern);
    if let Some(v) = text("exact") {
        Ok(HeaderMatch::Exact {
            name: name.to_string(),
            value: v.to_string(),
        })
    } else if let Some(v) = text("prefix") {
        regex(format!("{}.*", regex::escape(v)))
    } else if let Some(v) = text("regex") {
        regex(v.to_string())
    } else {
        Err(format!(
            "header {name}: only exact, prefix and regex are simulated"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vs(spec: Value) -> VirtualService {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "podinfo", "namespace": "test"}, "spec": spec
        }))
        .unwrap()
    }

    fn key(namespace: &str, name: &str) -> BackendTarget {
        BackendTarget::Service(ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    #[test]
    fn serins_split_is_read_with_its_weights_and_hosts() {
        let r = vs(
            serde_json::json!({"hosts": ["podinfo"], "http": [{"route": [
            {"destination": {"host": "podinfo-primary"}, "weight": 70},
            {"destination": {"host": "podinfo-canary.test.svc.cluster.local"}, "weight": 30}]}]}),
        )
        .to_sim_route(RouteSettings::for_tests())
        .unwrap();
        assert_eq!(r.provider, "istio");
        assert_eq!(r.precedence, Precedence::FirstMatch);
        let b = &r.rules[0].backends;
        assert_eq!(
            (b[0].target.clone(), b[0].weight),
            (key("test", "podinfo-primary"), 70)
        );
        assert_eq!(
            (b[1].target.clone(), b[1].weight),
            (key("test", "podinfo-canary"), 30)
        );
    }

    #[test]
    fn ab_routes_keep_their_order_and_header_matches() {
        let r = vs(serde_json::json!({"http": [
            {"match": [{"headers": {"X-Canary": {"exact": "insider"}}},
                       {"headers": {"cookie": {"regex": ".*canary=always.*"}}, "uri": {"prefix": "/"}}],
             "route": [{"destination": {"host": "podinfo-primary"}, "weight": 0},
                       {"destination": {"host": "podinfo-canary"}, "weight": 100}]},
            {"route": [{"destination": {"host": "podinfo-primary"}}]}]}))
        .to_sim_route(RouteSettings::for_tests())
        .unwrap();
        let insider = BTreeMap::from([("x-canary".to_string(), "insider".to_string())]);
        let cookie = BTreeMap::from([("cookie".to_string(), "a=b; canary=always".to_string())]);
        assert!(r.rules[0].matches[0].holds(&insider));
        assert!(r.rules[0].matches[1].holds(&cookie));
        assert!(!r.rules[0].matches[0].holds(&BTreeMap::new()));
        // A lone destination without a weight takes everything.
        assert_eq!(r.rules[1].backends[0].weight, 100);
    }

    #[test]
    fn what_the_simulator_cannot_model_is_named() {
        let e = vs(
            serde_json::json!({"http": [{"match": [{"uri": {"prefix": "/api"}}], "route": []}]}),
        )
        .to_sim_route(RouteSettings::for_tests())
        .unwrap_err();
        assert!(e.contains("spec.http[0].match: condition uri"), "{e}");
        let e = vs(serde_json::json!({"tcp": [{"route": []}]}))
            .to_sim_route(RouteSettings::for_tests())
            .unwrap_err();
        assert!(e.contains("TCP"), "{e}");
    }

    #[test]
    fn cookies_set_by_a_destination_or_a_route_are_read() {
        let r = vs(serde_json::json!({"http": [
            {"match": [{"headers": {"Cookie": {"regex": "(.*; ?)?canary=abc(;.*)?"}}}],
             "headers": {"response": {"add": {"Set-Cookie": "canary=abc; Max-Age=0"}}},
             "route": [{"destination": {"host": "podinfo-primary"}, "weight": 100}]},
            {"route": [{"destination": {"host": "podinfo-primary"}, "weight": 90},
                {"destination": {"host": "podinfo-canary"}, "weight": 10,
                 "headers": {"response": {"add": {"Set-Cookie": "canary=abc; Max-Age=60"}}}}]}]}))
        .to_sim_route(RouteSettings::for_tests())
        .unwrap();
        assert_eq!(
            r.rules[0].set_cookie.as_deref(),
            Some("canary=abc; Max-Age=0")
        );
        assert_eq!(r.rules[1].backends[0].set_cookie, None);
        assert_eq!(
            r.rules[1].backends[1].set_cookie.as_deref(),
            Some("canary=abc; Max-Age=60")
        );
        let cookie = BTreeMap::from([("cookie".to_string(), "a=b; canary=abc".to_string())]);
        assert!(r.rules[0].matches[0].holds(&cookie));
    }
}
