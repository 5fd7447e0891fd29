//! Contour: an HTTPProxy `<service>` (projectcontour.io/v1, no virtualhost: the user's root HTTPProxy
//! includes it) whose route splits traffic between `<service>-primary` and `<service>-canary` by weight, as
//! Flagger writes it: the path prefix from the first `service.match` uri prefix (else `/`), the response
//! timeout from `service.timeout` (idle 5m), the retry policy from `service.retries`, and Linkerd's
//! `l5d-dst-override` header on each service so a meshed Contour keeps the split.
//!
//! A/B: one route per entry of the analysis' `match` sends what matches to the canary; Contour ANDs the
//! conditions of one route, so entries stay alternatives as they are in Istio's shape (Flagger puts them all
//! in one route, which ANDs them). A header's `exact` and `regex` carry over; `prefix` and `suffix` become
//! anchored regexes (Flagger makes them `contains`, which also matches the value anywhere).

use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use kube::core::GroupVersionKind;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Router, RoutingError, ServiceNames};
use crate::api::Canary;
use crate::api::canary::TOTAL_WEIGHT;
use crate::vocabulary::{Traffic, Weights};

#[derive(Default)]
pub struct ContourRouter {
    /// `spec.ingressClassName` of the HTTPProxy (`--ingress-class`, Flagger's flag), for a Contour that
    /// serves only its class.
    pub ingress_class: Option<String>,
}

pub fn http_proxies() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("projectcontour.io", "v1", "HTTPProxy"),
        "httpproxies",
    )
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpProxySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<Value>,
    #[serde(default)]
    pub services: Vec<Service>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub name: String,
    pub port: i32,
    /// Contour reads a missing weight as 0 when another service of the route has one.
    #[serde(default)]
    pub weight: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_policy: Option<Value>,
}

fn prefix(canary: &Canary) -> String {
    canary
        .spec
        .service
        .r#match
        .iter()
        .flatten()
        .find_map(|m| m.pointer("/uri/prefix").and_then(Value::as_str))
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_string()
}

/// Contour's header condition for one of the analysis' header matches (Istio's StringMatch shape).
fn header_condition(canary: &Canary, name: &str, condition: &Value) -> Result<Value, RoutingError> {
    let text = |k: &str| condition.get(k).and_then(Value::as_str);
    let (key, value) = if let Some(v) = text("exact") {
        ("exact", v.to_string())
    } else if let Some(v) = text("regex") {
        ("regex", v.to_string())
    } else if let Some(v) = text("prefix") {
        ("regex", format!("^{}.*", regex::escape(v)))
    } else if let Some(v) = text("suffix") {
        ("regex", format!(".*{}$", regex::escape(v)))
    } else {
        return Err(RoutingError::Invalid {
            canary: canary.name_any(),
            field: format!("spec.analysis.match headers.{name}"),
            message: "give exact, prefix, suffix or regex".into(),
        });
    };
    Ok(json!({"header": {"name": name, key: value}}))
}

/// A service of a route, with Linkerd's `l5d-dst-override` so a meshed Contour keeps the split.
fn backend(canary: &Canary, name: &str, weight: i32) -> Service {
    let port = canary.spec.service.port;
    Service {
        name: name.to_string(),
        port,
        weight: i64::from(weight),
        request_headers_policy: Some(json!({"set": [{
            "name": "l5d-dst-override",
            "value": format!(
                "{name}.{}.svc.cluster.local:{port}",
                canary.namespace().unwrap_or_default()
            ),
        }]})),
    }
}

impl ContourRouter {
    fn route(&self, canary: &Canary, conditions: Vec<Value>, w: Weights) -> Route {
        let service = &canary.spec.service;
        let names = ServiceNames::of(canary);
        let retry_policy = service.retries.as_ref().map(|r| {
            let mut policy = serde_json::Map::new();
            if let Some(n) = r.get("attempts") {
                policy.insert("count".into(), n.clone());
            }
            if let Some(t) = r.get("perTryTimeout") {
                policy.insert("perTryTimeout".into(), t.clone());
            }
            if let Some(on) = r.get("retryOn").and_then(Value::as_str) {
                let on: Vec<&str> = on.split(',').map(str::trim).collect();
                policy.insert("retryOn".into(), json!(on));
            }
            Value::Object(policy)
        });
        Route {
            conditions,
            timeout_policy: service
                .timeout
                .as_ref()
                .map(|t| json!({"response": t, "idle": "5m"})),
            retry_policy,
            services: vec![
                backend(canary, &names.primary, w.primary),
                backend(canary, &names.canary, w.canary),
            ],
        }
    }

    fn spec(&self, canary: &Canary, traffic: Traffic) -> Result<HttpProxySpec, RoutingError> {
        let prefix = json!({ "prefix": prefix(canary) });
        let mut routes = Vec::new();
        if traffic == Traffic::Matched {
            let given = canary
                .spec
                .active_analysis()
                .and_then(|a| a.r#match.clone())
                .unwrap_or_default();
            for m in &given {
                let mut conditions = vec![prefix.clone()];
                let headers = m.get("headers").and_then(Value::as_object);
                for (name, condition) in headers.into_iter().flatten() {
                    conditions.push(header_condition(canary, name, condition)?);
                }
                if conditions.len() > 1 {
                    routes.push(self.route(canary, conditions, Weights::canary(TOTAL_WEIGHT)));
                }
            }
            if routes.is_empty() {
                return Err(RoutingError::Invalid {
                    canary: canary.name_any(),
                    field: "spec.analysis.match".into(),
                    message: "A/B through Contour needs a header match".into(),
                });
            }
        }
        let split = match traffic {
            Traffic::Split(w) => w,
            Traffic::Matched => Weights::canary(0),
            Traffic::Mirrored => return Err(super::no_mirroring(canary, "contour")),
        };
        routes.push(self.route(canary, vec![prefix], split));
        Ok(HttpProxySpec {
            ingress_class_name: self.ingress_class.clone(),
            routes,
        })
    }

    fn object(&self, canary: &Canary, spec: &HttpProxySpec) -> DynamicObject {
        let name = ServiceNames::of(canary).apex;
        let mut proxy = DynamicObject::new(&name, &http_proxies());
        proxy.metadata = ObjectMeta {
            name: Some(name),
            namespace: canary.namespace(),
            owner_references: canary.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        };
        proxy.data = json!({ "spec": spec });
        proxy
    }
}

impl Router for ContourRouter {
    fn name(&self) -> &'static str {
        "contour"
    }

    fn resources(&self) -> Vec<ApiResource> {
        vec![http_proxies()]
    }

    fn objects(&self, canary: &Canary) -> Vec<(ApiResource, String)> {
        vec![(http_proxies(), ServiceNames::of(canary).apex)]
    }

    fn desired(
        &self,
        canary: &Canary,
        traffic: Traffic,
    ) -> Result<Vec<DynamicObject>, RoutingError> {
        Ok(vec![self.object(canary, &self.spec(canary, traffic)?)])
    }

    fn handed_back(&self, canary: &Canary) -> Result<Vec<DynamicObject>, RoutingError> {
        let names = ServiceNames::of(canary);
        let mut spec = self.spec(canary, Traffic::Split(Weights::canary(0)))?;
        for route in &mut spec.routes {
            route.services = vec![backend(canary, &names.apex, TOTAL_WEIGHT)];
        }
        let mut proxy = self.object(canary, &spec);
        proxy.metadata.owner_references = None;
        Ok(vec![proxy])
    }

    fn traffic(&self, canary: &Canary, route: &DynamicObject) -> Option<Traffic> {
        let names = ServiceNames::of(canary);
        let spec: HttpProxySpec = serde_json::from_value(route.data.get("spec")?.clone()).ok()?;
        let split = |services: &[Service]| -> Option<Weights> {
            let weight_of = |name: &str| {
                services
                    .iter()
                    .filter(|s| s.name == name)
                    .map(|s| s.weight.max(0))
                    .sum::<i64>()
            };
            Weights::from_relative(
                weight_of(&names.primary) as f64,
                weight_of(&names.canary) as f64,
            )
        };
        // The split is the last route; an earlier one sending the canary anything is A/B's match route.
        let (last, earlier) = spec.routes.split_last()?;
        if earlier
            .iter()
            .any(|r| split(&r.services).is_some_and(|w| w.canary > 0))
        {
            return Some(Traffic::Matched);
        }
        split(&last.services).map(Traffic::Split)
    }
}

#[cfg(test)]
mod tests;
