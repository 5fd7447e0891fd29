//! Gateway API: an HTTPRoute `<service>` whose rule splits traffic between `<service>-primary` and
//! `<service>-canary` by weight; for A/B, a rule before it sends the requests that match to the canary;
//! with session affinity, cookie rules before it (`affinity`), the backends' answers setting the cookies.
//! Our own minimal types of the fields Serin writes (the gateway-api crate is on another kube major).

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use kube::core::GroupVersionKind;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::affinity::{self, Sticky};
use super::{Router, RoutingError, ServiceNames};
use crate::api::Canary;
use crate::api::canary::{RouteKind, TOTAL_WEIGHT};
use crate::vocabulary::{Traffic, Weights};

/// The router of providers `gatewayapi` and `gatewayapi:v1` ([`V1`]) and `gatewayapi:v1beta1`
/// ([`V1BETA1`]): an HTTPRoute at that version, or a GRPCRoute (v1) with `service.routeKind: GRPCRoute`.
pub struct GatewayApiRouter {
    http_version: &'static str,
}

pub const V1: GatewayApiRouter = GatewayApiRouter { http_version: "v1" };
pub const V1BETA1: GatewayApiRouter = GatewayApiRouter {
    http_version: "v1beta1",
};

const GROUP: &str = "gateway.networking.k8s.io";

impl GatewayApiRouter {
    fn http_routes(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, self.http_version, "HTTPRoute"),
            "httproutes",
        )
    }

    /// The route kind the Canary's traffic goes through.
    fn resource_for(&self, canary: &Canary) -> ApiResource {
        match canary.spec.service.route_kind.unwrap_or_default() {
            RouteKind::HttpRoute => self.http_routes(),
            RouteKind::GrpcRoute => grpc_routes(),
        }
    }
}

pub fn grpc_routes() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1", "GRPCRoute"),
        "grpcroutes",
    )
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Match>,
    /// Serin writes only a RequestMirror to the canary (`analysis.mirror`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Value>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Match {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Serin writes none; the API server fills in a `/` prefix when a match (or a rule's matches) has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Read back only, to tell a catch-all rule from a narrower one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// An HTTP method (HTTPRoute), or a gRPC service and method (GRPCRoute).
    pub method: Option<Value>,
}

impl Match {
    /// True when every request matches: no header, query or method condition, and no path other than
    /// the `/` prefix the API server defaults to.
    fn matches_everything(&self) -> bool {
        self.headers.is_empty()
            && self.query_params.is_empty()
            && self.method.is_none()
            && self.path.as_ref().is_none_or(PathMatch::is_root_prefix)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PathMatch {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub match_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl PathMatch {
    fn is_root_prefix(&self) -> bool {
        self.match_type.as_deref().unwrap_or("PathPrefix") == "PathPrefix"
            && self.value.as_deref().unwrap_or("/") == "/"
    }
}

impl Rule {
    /// The rule every request falls through to: no matches, or only matches of everything.
    fn is_catch_all(&self) -> bool {
        self.matches.iter().all(Match::matches_everything)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HeaderMatch {
    #[serde(rename = "type")]
    pub match_type: String,
    pub name: String,
    pub value: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct BackendRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Serin writes only the session affinity cookie the backend's answers carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Value>,
}

/// A filter adding `Set-Cookie: value` to answers.
fn set_cookie(value: &str) -> Value {
    serde_json::json!({"type": "ResponseHeaderModifier",
        "responseHeaderModifier": {"add": [{"name": affinity::SET_COOKIE_HEADER, "value": value}]}})
}

/// A rule of session affinity: each of its matches is on the Canary's cookie.
fn is_sticky(canary: &Canary, rule: &Rule) -> bool {
    !rule.matches.is_empty()
        && rule.matches.iter().all(|m| {
            m.headers.iter().any(|h| {
                h.match_type == "RegularExpression"
                    && affinity::is_sticky_match(canary, &h.name, &h.value)
            })
        })
}

/// The rule sending the requests that carry `cookie` to these backends.
fn cookie_rule(cookie: &affinity::Cookie, backend_refs: Vec<BackendRef>) -> Rule {
    Rule {
        matches: vec![Match {
            headers: vec![HeaderMatch {
                match_type: "RegularExpression".into(),
                name: affinity::COOKIE_HEADER.into(),
                value: cookie.regex(),
            }],
            ..Match::default()
        }],
        filters: vec![],
        backend_refs,
    }
}

impl Router for GatewayApiRouter {
    fn name(&self) -> &'static str {
        "gatewayapi"
    }

    fn resources(&self) -> Vec<ApiResource> {
        vec![self.http_routes(), grpc_routes()]
    }

    fn objects(&self, canary: &Canary) -> Vec<(ApiResource, String)> {
        vec![(self.resource_for(canary), ServiceNames::of(canary).apex)]
    }

    fn desired(
        &self,
        canary: &Canary,
        traffic: Traffic,
    ) -> Result<Vec<DynamicObject>, RoutingError> {
        let names = ServiceNames::of(canary);
        let port = Some(canary.spec.service.port);
        let backends = |w: Weights| {
            vec![
                BackendRef {
                    name: names.primary.clone(),
                    port,
                    weight: Some(w.primary),
                    filters: vec![],
                },
                BackendRef {
                    name: names.canary.clone(),
                    port,
                    weight: Some(w.canary),
                    filters: vec![],
                },
            ]
        };
        let split = |backend_refs| Rule {
            matches: vec![],
            filters: vec![],
            backend_refs,
        };
        let rules = match traffic {
            Traffic::Split(w) => match affinity::sticky(canary, w) {
                None => vec![split(backends(w))],
                Some(Sticky::Active {
                    canary: cc,
                    primary,
                }) => {
                    let mut weighted = backends(w);
                    weighted[1].filters = vec![set_cookie(&cc.set)];
                    let mut rules = vec![cookie_rule(&cc, backends(Weights::canary(TOTAL_WEIGHT)))];
                    if let Some(pc) = primary {
                        weighted[0].filters = vec![set_cookie(&pc.set)];
                        rules.push(cookie_rule(&pc, backends(Weights::canary(0))));
                    }
                    rules.push(split(weighted));
                    rules
                }
                Some(Sticky::Ended { canary: cc, expire }) => {
                    let mut expiring = cookie_rule(&cc, backends(w));
                    expiring.filters = vec![set_cookie(&expire)];
                    vec![expiring, split(backends(w))]
                }
            },
            Traffic::Matched => vec![
                Rule {
                    matches: ab_matches(canary)?,
                    filters: vec![],
                    backend_refs: backends(Weights::canary(TOTAL_WEIGHT)),
                },
                Rule {
                    matches: vec![],
                    filters: vec![],
                    backend_refs: backends(Weights::canary(0)),
                },
            ],
            Traffic::Mirrored => {
                let mut mirror =
                    serde_json::json!({"backendRef": {"name": names.canary, "port": port}});
                let percent = super::mirror_percent(canary);
                if percent < TOTAL_WEIGHT {
                    mirror["percent"] = percent.into();
                }
                vec![Rule {
                    matches: vec![],
                    filters: vec![
                        serde_json::json!({"type": "RequestMirror", "requestMirror": mirror}),
                    ],
                    backend_refs: backends(Weights::canary(0)),
                }]
            }
        };
        let spec = HttpRouteSpec {
            parent_refs: canary
                .spec
                .service
                .gateway_refs
                .iter()
                .map(|p| ParentRef {
                    group: p.group.clone(),
                    kind: p.kind.clone(),
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    section_name: p.section_name.clone(),
                    port: p.port,
                })
                .collect(),
            hostnames: canary.spec.service.hosts.clone(),
            rules,
        };
        let mut route = DynamicObject::new(&names.apex, &self.resource_for(canary));
        route.metadata = ObjectMeta {
            name: Some(names.apex.clone()),
            namespace: canary.namespace(),
            owner_references: canary.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        };
        route.data = serde_json::json!({ "spec": spec });
        Ok(vec![route])
    }

    fn handed_back(&self, canary: &Canary) -> Result<Vec<DynamicObject>, RoutingError> {
        let names = ServiceNames::of(canary);
        let mut routes = self.desired(canary, Traffic::Split(Weights::canary(0)))?;
        for route in &mut routes {
            route.metadata.owner_references = None;
            route.data["spec"]["rules"] = serde_json::json!([{"backendRefs": [
                {"name": names.apex, "port": canary.spec.service.port}]}]);
        }
        Ok(routes)
    }

    fn traffic(&self, canary: &Canary, route: &DynamicObject) -> Option<Traffic> {
        let names = ServiceNames::of(canary);
        let spec: HttpRouteSpec = serde_json::from_value(route.data.get("spec")?.clone()).ok()?;
        let split = |rule: &Rule| -> Option<Weights> {
            let weight_of = |name: &str| {
                rule.backend_refs
                    .iter()
                    .find(|b| b.name == name)
                    .map(|b| b.weight.unwrap_or(1))
            };
            // Weights are relative in Gateway API; Serin's are percentages.
            Weights::from_relative(
                f64::from(weight_of(&names.primary).unwrap_or(0)),
                f64::from(weight_of(&names.canary).unwrap_or(0)),
            )
        };
        // As the API server stores it: a rule without matches gets a `/` path prefix, so the split is the
        // catch-all rule, and A/B's match rule comes before it.
        let catch_all = spec.rules.iter().position(Rule::is_catch_all)?;
        let narrower_to_canary = spec.rules[..catch_all]
            .iter()
            .filter(|r| !is_sticky(canary, r))
            .any(|r| split(r).is_some_and(|w| w.canary > 0));
        if narrower_to_canary {
            return Some(Traffic::Matched);
        }
        let rule = &spec.rules[catch_all];
        let weights = split(rule)?;
        let mirrors_to_canary = rule.filters.iter().any(|f| {
            f["type"] == "RequestMirror"
                && f["requestMirror"]["backendRef"]["name"] == *names.canary
        });
        if weights.canary == 0 && mirrors_to_canary {
            return Some(Traffic::Mirrored);
        }
        Some(Traffic::Split(weights))
    }
}

/// The analysis' Istio-style match (headers: exact, regex, prefix, suffix) as HTTPRoute matches.
fn ab_matches(canary: &Canary) -> Result<Vec<Match>, RoutingError> {
    let name = canary.name_any();
    let analysis = canary
        .spec
        .analysis
        .as_ref()
        .or(canary.spec.canary_analysis.as_ref());
    let given = analysis.and_then(|a| a.r#match.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for (i, m) in given.iter().enumerate() {
        let fields = m.as_object().cloned().unwrap_or_default();
        let mut headers = Vec::new();
        for (key, value) in &fields {
            if key != "headers" {
                return Err(RoutingError::Unsupported {
                    canary: name,
                    router: "gatewayapi",
                    field: format!("spec.analysis.match[{i}].{key}"),
                });
            }
            let conditions: BTreeMap<String, Value> =
                serde_json::from_value(value.clone()).unwrap_or_default();
            for (header, condition) in conditions {
                let path = format!("spec.analysis.match[{i}].headers.{header}");
                headers.push(header_match(&name, &path, &header, &condition)?);
            }
        }
        out.push(Match {
            headers,
            ..Match::default()
        });
    }
    if out.is_empty() {
        return Err(RoutingError::Invalid {
            canary: name,
            field: "spec.analysis.match".into(),
            message: "A/B testing needs at least one match".into(),
        });
    }
    Ok(out)
}

fn header_match(
    canary: &str,
    path: &str,
    header: &str,
    condition: &Value,
) -> Result<HeaderMatch, RoutingError> {
    let invalid = |message: &str| RoutingError::Invalid {
        canary: canary.to_string(),
        field: path.to_string(),
        message: message.to_string(),
    };
    let cond = condition
        .as_object()
        .ok_or_else(|| invalid("must be one of exact, regex, prefix, suffix"))?;
    let (kind, value) = cond
        .iter()
        .next()
        .ok_or_else(|| invalid("must be one of exact, regex, prefix, suffix"))?;
    let value = value.as_str().ok_or_else(|| invalid("must be a string"))?;
    let (match_type, value) = match kind.as_str() {
        "exact" => ("Exact", value.to_string()),
        "regex" => ("RegularExpression", value.to_string()),
        "prefix" => ("RegularExpression", format!("^{}.*", regex::escape(value))),
        "suffix" => ("RegularExpression", format!(".*{}$", regex::escape(value))),
        other => {
            return Err(invalid(&format!(
                "{other:?} is not one of exact, regex, prefix, suffix"
            )));
        }
    };
    Ok(HeaderMatch {
        match_type: match_type.to_string(),
        name: header.to_string(),
        value,
    })
}

/// The route as kube-apiserver stores it, with the Gateway API CRD's defaults filled in: a `/` path prefix
/// in every match (and a match in every rule without one), and each backend's group and kind (the e2e test
/// `the_route_is_read_back_as_the_api_server_stores_it` checks this shape against a real server).
#[cfg(test)]
pub(crate) fn as_stored(mut route: DynamicObject) -> DynamicObject {
    use serde_json::json;
    for rule in route.data["spec"]["rules"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        let Some(rule) = rule.as_object_mut() else {
            continue;
        };
        let matches = rule.entry("matches").or_insert(json!([{}]));
        for m in matches.as_array_mut().into_iter().flatten() {
            if m.get("path").is_none() {
                m["path"] = json!({"type": "PathPrefix", "value": "/"});
            }
        }
        for b in rule["backendRefs"].as_array_mut().into_iter().flatten() {
            b["group"] = json!("");
            b["kind"] = json!("Service");
        }
    }
    route
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canary(analysis: Value) -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "apps", "uid": "u1"},
            "spec": {"targetRef": {"name": "podinfo"}, "service": {"port": 9898, "hosts": ["app.example.com"],
                "gatewayRefs": [{"name": "gateway", "namespace": "infra"}]}, "analysis": analysis}
        }))
        .unwrap()
    }

    #[test]
    fn a_split_is_one_rule_with_both_backends() {
        let c = canary(json!({"stepWeight": 10}));
        let route = &V1.desired(&c, Traffic::Split(Weights::canary(30))).unwrap()[0];
        assert_eq!(route.metadata.name.as_deref(), Some("podinfo"));
        assert_eq!(
            route.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Canary"
        );
        assert_eq!(
            route.data["spec"],
            json!({"parentRefs": [{"name": "gateway", "namespace": "infra"}], "hostnames": ["app.example.com"],
                "rules": [{"backendRefs": [{"name": "podinfo-primary", "port": 9898, "weight": 70},
                                           {"name": "podinfo-canary", "port": 9898, "weight": 30}]}]})
        );
        assert_eq!(
            V1.traffic(&c, route),
            Some(Traffic::Split(Weights::canary(30)))
        );
    }

    #[test]
    fn ab_sends_matching_requests_to_the_canary() {
        let c = canary(json!({"iterations": 3, "match": [
            {"headers": {"x-canary": {"exact": "insider"}}},
            {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}, "x-tier": {"prefix": "beta."}}}
        ]}));
        let route = &V1.desired(&c, Traffic::Matched).unwrap()[0];
        let rules = &route.data["spec"]["rules"];
        assert_eq!(
            rules[0]["matches"][0]["headers"],
            json!([{"type": "Exact", "name": "x-canary", "value": "insider"}])
        );
        assert_eq!(
            rules[0]["matches"][1]["headers"],
            json!([{"type": "RegularExpression", "name": "cookie", "value": "^(.*?;)?(canary=always)(;.*)?$"},
                   {"type": "RegularExpression", "name": "x-tier", "value": "^beta\\..*"}])
        );
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 100);
        assert_eq!(rules[1]["backendRefs"][0]["weight"], 100);
        assert_eq!(V1.traffic(&c, route), Some(Traffic::Matched));
    }

    #[test]
    fn match_fields_the_router_cannot_express_are_errors() {
        let c = canary(json!({"iterations": 3, "match": [{"uri": {"prefix": "/api"}}]}));
        let e = V1.desired(&c, Traffic::Matched).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Canary podinfo: spec.analysis.match[0].uri is not supported yet by the gatewayapi router"
        );
    }

    #[test]
    fn relative_weights_read_back_as_percentages() {
        let c = canary(json!({"stepWeight": 10}));
        let mut route = V1
            .desired(&c, Traffic::Split(Weights::canary(0)))
            .unwrap()
            .remove(0);
        route.data["spec"]["rules"][0]["backendRefs"] = json!([{"name": "podinfo-primary", "weight": 3}, {"name": "podinfo-canary", "weight": 1}]);
        assert_eq!(
            V1.traffic(&c, &route),
            Some(Traffic::Split(Weights::canary(25)))
        );
    }

    #[test]
    fn weights_are_read_back_from_the_route_as_the_server_stores_it() {
        let c = canary(json!({"stepWeight": 10}));
        let route = V1
            .desired(&c, Traffic::Split(Weights::canary(20)))
            .unwrap()
            .remove(0);
        let stored = as_stored(route);
        assert_eq!(
            stored.data["spec"]["rules"][0]["matches"],
            json!([{"path": {"type": "PathPrefix", "value": "/"}}])
        );
        assert_eq!(
            V1.traffic(&c, &stored),
            Some(Traffic::Split(Weights::canary(20)))
        );
        let ab = canary(
            json!({"iterations": 3, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}),
        );
        let matched = as_stored(V1.desired(&ab, Traffic::Matched).unwrap().remove(0));
        assert_eq!(V1.traffic(&ab, &matched), Some(Traffic::Matched));
        let split = as_stored(
            V1.desired(&ab, Traffic::Split(Weights::canary(0)))
                .unwrap()
                .remove(0),
        );
        assert_eq!(
            V1.traffic(&ab, &split),
            Some(Traffic::Split(Weights::canary(0)))
        );
    }

    #[test]
    fn a_route_handed_back_sends_everything_to_the_apex_service_and_has_no_owner() {
        let c = canary(json!({"stepWeight": 10}));
        let route = V1.handed_back(&c).unwrap().remove(0);
        assert_eq!(route.metadata.owner_references, None);
        assert_eq!(
            route.data["spec"]["rules"],
            json!([{"backendRefs": [{"name": "podinfo", "port": 9898}]}])
        );
        assert_eq!(route.data["spec"]["hostnames"], json!(["app.example.com"]));
    }

    #[test]
    fn session_affinity_rules_come_before_the_split_and_read_back_as_it() {
        let mut c = canary(json!({"stepWeight": 10, "sessionAffinity": {"cookieName": "canary"}}));
        c.status = Some(crate::api::CanaryStatus {
            last_applied_spec: Some("r2".into()),
            ..Default::default()
        });
        let route = as_stored(
            V1.desired(&c, Traffic::Split(Weights::canary(10)))
                .unwrap()
                .remove(0),
        );
        let rules = &route.data["spec"]["rules"];
        let cookie = &rules[0]["matches"][0]["headers"][0];
        assert_eq!(cookie["type"], "RegularExpression");
        assert_eq!(cookie["name"], "Cookie");
        assert_eq!(rules[0]["backendRefs"][1]["weight"], json!(100));
        let set = &rules[1]["backendRefs"][1]["filters"][0];
        assert_eq!(set["type"], "ResponseHeaderModifier");
        let value = set["responseHeaderModifier"]["add"][0]["value"]
            .as_str()
            .unwrap();
        assert!(
            value.starts_with("canary=") && value.ends_with("; Max-Age=86400"),
            "{value}"
        );
        assert_eq!(
            V1.traffic(&c, &route),
            Some(Traffic::Split(Weights::canary(10)))
        );
        let route = as_stored(
            V1.desired(&c, Traffic::Split(Weights::canary(0)))
                .unwrap()
                .remove(0),
        );
        let expire = &route.data["spec"]["rules"][0]["filters"][0]["responseHeaderModifier"]["add"]
            [0]["value"];
        assert!(
            expire.as_str().unwrap().ends_with("; Max-Age=0"),
            "{expire}"
        );
        assert_eq!(
            V1.traffic(&c, &route),
            Some(Traffic::Split(Weights::canary(0)))
        );
    }

    #[test]
    fn a_grpc_route_or_a_v1beta1_http_route_by_the_canarys_route_kind_and_provider() {
        let mut c = canary(json!({"stepWeight": 10}));
        let route = V1
            .desired(&c, Traffic::Split(Weights::canary(30)))
            .unwrap()
            .remove(0);
        let types = route.types.clone().unwrap();
        assert_eq!(
            (types.api_version.as_str(), types.kind.as_str()),
            ("gateway.networking.k8s.io/v1", "HTTPRoute")
        );
        let route = V1BETA1
            .desired(&c, Traffic::Split(Weights::canary(30)))
            .unwrap()
            .remove(0);
        assert_eq!(
            route.types.unwrap().api_version,
            "gateway.networking.k8s.io/v1beta1"
        );
        assert_eq!(V1BETA1.objects(&c)[0].0.version, "v1beta1");

        c.spec.service.route_kind = Some(RouteKind::GrpcRoute);
        for router in [V1, V1BETA1] {
            assert_eq!(router.objects(&c)[0].0.kind, "GRPCRoute");
            for traffic in [Traffic::Split(Weights::canary(30)), Traffic::Mirrored] {
                // As stored: a GRPCRoute gets no path defaults.
                let route = router.desired(&c, traffic).unwrap().remove(0);
                let types = route.types.clone().unwrap();
                assert_eq!(
                    (types.api_version.as_str(), types.kind.as_str()),
                    ("gateway.networking.k8s.io/v1", "GRPCRoute")
                );
                assert_eq!(router.traffic(&c, &route), Some(traffic));
                assert!(router.resource_of(&route).is_some());
            }
        }
        let mut ab = canary(
            json!({"iterations": 2, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}),
        );
        ab.spec.service.route_kind = Some(RouteKind::GrpcRoute);
        let route = V1.desired(&ab, Traffic::Matched).unwrap().remove(0);
        assert_eq!(
            route.data["spec"]["rules"][0]["matches"][0]["headers"][0]["value"],
            "insider"
        );
        assert_eq!(V1.traffic(&ab, &route), Some(Traffic::Matched));
    }

    #[test]
    fn a_rule_for_one_path_only_is_not_the_split() {
        let c = canary(json!({"stepWeight": 10}));
        let mut route = V1
            .desired(&c, Traffic::Split(Weights::canary(20)))
            .unwrap()
            .remove(0);
        route.data["spec"]["rules"][0]["matches"] =
            json!([{"path": {"type": "PathPrefix", "value": "/api"}}]);
        assert_eq!(V1.traffic(&c, &route), None);
    }
}
