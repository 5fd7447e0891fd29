//! Contour's HTTPProxy (projectcontour.io/v1): routes of conditions (a path prefix and header conditions,
//! all of which must hold) and weighted services. Contour tries routes with header conditions before those
//! without on the same prefix, so the most specific match wins. The simulator's requests all go to `/`:
//! a prefix other than `/` is not simulated (the proxy is skipped with a warning), nor are the negated
//! header conditions. Requests are counted in Envoy's cluster series, a cluster per Service and port.

use kube::CustomResource;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RouteObject, RouteSettings};
use crate::model::{
    BackendTarget, HeaderMatch, Precedence, ProxySeries, RequestMatch, ServiceKey, SimRoute,
    SimRule, WeightedBackend,
};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default)]
#[kube(
    group = "projectcontour.io",
    version = "v1",
    kind = "HTTPProxy",
    namespaced,
    schema = "disabled"
)]
pub struct HTTPProxySpec {
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct Route {
    #[serde(default)]
    pub conditions: Vec<Value>,
    #[serde(default)]
    pub services: Vec<Service>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct Service {
    pub name: String,
    #[serde(default)]
    pub port: i32,
    #[serde(default)]
    pub weight: Option<u32>,
}

fn condition(c: &Value) -> Result<Option<HeaderMatch>, String> {
    if let Some(prefix) = c.get("prefix") {
        return match prefix.as_str() {
            Some("/") => Ok(None),
            _ => Err(format!(
                "prefix {prefix} is not simulated (requests go to /)"
            )),
        };
    }
    let Some(header) = c.get("header") else {
        return Err(format!("condition {c} is not simulated"));
    };
    let name = header
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a header condition without a name")?
        .to_ascii_lowercase();
    let text = |k: &str| header.get(k).and_then(Value::as_str);
    let regex = |pattern: String| Regex::new(&pattern).map_err(|e| format!("header {name}: {e}"));
    let m = if let Some(v) = text("exact") {
        HeaderMatch::Exact {
            name,
            value: v.to_string(),
        }
    } else if let Some(v) = text("regex") {
        HeaderMatch::whole_value(&name, v)?
    } else if let Some(v) = text("contains") {
        let regex = regex(regex::escape(v))?;
        HeaderMatch::Regex { name, regex }
    } else if header.get("present") == Some(&Value::Bool(true)) {
        let regex = regex(String::new())?;
        HeaderMatch::Regex { name, regex }
    } else {
        return Err(format!("header {name}: {header} is not simulated"));
    };
    Ok(Some(m))
}

impl RouteObject for HTTPProxy {
    const PROVIDER: &'static str = "contour";

    fn to_sim_route(&self, settings: RouteSettings) -> Result<SimRoute, String> {
        let namespace = self.metadata.namespace.clone().unwrap_or_default();
        let key = |name: &str| ServiceKey {
            namespace: namespace.clone(),
            name: name.to_string(),
        };
        let mut ports = Vec::new();
        let mut rules = Vec::new();
        for (i, route) in self.spec.routes.iter().enumerate() {
            let headers = route
                .conditions
                .iter()
                .filter_map(|c| condition(c).transpose())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("spec.routes[{i}].conditions: {e}"))?;
            // With no weight on any service Contour splits evenly; otherwise a missing weight is 0.
            let weighted = route.services.iter().any(|s| s.weight.is_some());
            let backends = route
                .services
                .iter()
                .map(|s| {
                    ports.push((key(&s.name), s.port));
                    WeightedBackend {
                        target: BackendTarget::Service(key(&s.name)),
                        weight: if weighted { s.weight.unwrap_or(0) } else { 1 },
                        set_cookie: None,
                    }
                })
                .collect();
            rules.push(SimRule {
                mirrors: vec![],
                matches: vec![RequestMatch { headers }],
                backends,
                set_cookie: None,
            });
        }
        Ok(SimRoute {
            provider: Self::PROVIDER,
            name: self.metadata.name.clone().unwrap_or_default(),
            namespace,
            rules,
            rps: settings.rps,
            request_mix: settings.request_mix,
            precedence: Precedence::MostSpecific,
            proxy: Some(ProxySeries::Envoy { ports }),
            clients: settings.clients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn proxy(spec: Value) -> HTTPProxy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "projectcontour.io/v1", "kind": "HTTPProxy",
            "metadata": {"name": "podinfo", "namespace": "test"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn header_routes_and_the_split_become_rules_with_envoy_clusters() {
        let r = proxy(serde_json::json!({"routes": [
            {"conditions": [{"prefix": "/"}, {"header": {"name": "X-Canary", "exact": "insider"}}],
             "services": [{"name": "podinfo-primary", "port": 9898, "weight": 0},
                          {"name": "podinfo-canary", "port": 9898, "weight": 100}]},
            {"conditions": [{"prefix": "/"}],
             "services": [{"name": "podinfo-primary", "port": 9898, "weight": 90},
                          {"name": "podinfo-canary", "port": 9898, "weight": 10}]}]}))
        .to_sim_route(RouteSettings::for_tests())
        .unwrap();
        assert_eq!(r.rules.len(), 2);
        let insider = BTreeMap::from([("x-canary".to_string(), "insider".to_string())]);
        assert!(r.rules[0].matches[0].holds(&insider));
        assert!(!r.rules[0].matches[0].holds(&BTreeMap::new()));
        assert!(r.rules[1].matches[0].holds(&BTreeMap::new()));
        let weights: Vec<u32> = r.rules[1].backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [90, 10]);
        let canary = ServiceKey {
            namespace: "test".into(),
            name: "podinfo-canary".into(),
        };
        assert_eq!(
            r.proxy.unwrap().backend_name(&canary).as_deref(),
            Some("test_podinfo-canary_9898")
        );
    }

    #[test]
    fn a_regex_matches_the_whole_value_and_other_prefixes_are_refused() {
        let r = proxy(serde_json::json!({"routes": [
            {"conditions": [{"header": {"name": "user-agent", "regex": "Mozilla.*"}}],
             "services": [{"name": "a", "port": 80}]}]}))
        .to_sim_route(RouteSettings::for_tests())
        .unwrap();
        let ua = |v: &str| BTreeMap::from([("user-agent".to_string(), v.to_string())]);
        assert!(r.rules[0].matches[0].holds(&ua("Mozilla/5.0")));
        assert!(!r.rules[0].matches[0].holds(&ua("curl Mozilla")));
        assert_eq!(r.rules[0].backends[0].weight, 1);
        let e = proxy(serde_json::json!({"routes": [
            {"conditions": [{"prefix": "/api"}], "services": [{"name": "a", "port": 80}]}]}))
        .to_sim_route(RouteSettings::for_tests())
        .unwrap_err();
        assert!(e.contains("spec.routes[0].conditions"), "{e}");
    }
}
