//! Istio: a VirtualService `<service>` whose HTTP route (or TCP route, for `appProtocol: tcp`) splits traffic
//! between `<service>-primary` and `<service>-canary` by weight, and a DestinationRule for each of those two
//! hosts carrying the Canary's `service.trafficPolicy`. For A/B, a route before it sends the requests that
//! match the analysis' `match` to the canary. The route takes the Canary's `service` settings as Flagger
//! passes them: `match`, `rewrite`, `timeout`, `retries`, `headers`, `corsPolicy`, `hosts` (the apex
//! Service's name added), `gateways` (`mesh` when none), `delegation`. Session affinity puts its cookie
//! routes first (`affinity`). Our own minimal types of the fields Serin writes, on networking.istio.io/v1.

use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use kube::core::GroupVersionKind;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::affinity::{self, Sticky};
use super::{Router, RoutingError, ServiceNames};
use crate::api::Canary;
use crate::api::canary::TOTAL_WEIGHT;
use crate::vocabulary::{Traffic, Weights};

pub struct IstioRouter;

const GROUP: &str = "networking.istio.io";
const VERSION: &str = "v1";

pub fn virtual_services() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "VirtualService"),
        "virtualservices",
    )
}

pub fn destination_rules() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "DestinationRule"),
        "destinationrules",
    )
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
}

/// The fields of Istio's HTTPRoute Serin sets; the Canary's own values (Istio's shapes) pass through.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<Value>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
    /// Where a copy of each request goes (its answer dropped), for `analysis.mirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<MirrorPercentage>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct MirrorPercentage {
    pub value: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Value>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RouteDestination {
    pub destination: Destination,
    /// Percent; Istio reads a missing weight as 0 when a route has several destinations.
    #[serde(default)]
    pub weight: i32,
    /// Serin sets only the session affinity cookie its answers carry (`response.add.Set-Cookie`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Destination {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PortSelector {
    pub number: i32,
}

fn is_tcp(canary: &Canary) -> bool {
    canary
        .spec
        .service
        .app_protocol
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("tcp"))
}

/// The analysis' match merged into each of the service's matches, as Flagger merges them: every pairing,
/// the analysis' headers and sourceLabels replacing the service's.
fn merged_matches(analysis: &[Value], service: &[Value]) -> Vec<Value> {
    if service.is_empty() {
        return analysis.to_vec();
    }
    let mut out = Vec::new();
    for a in analysis {
        for s in service {
            let mut m = s.clone();
            for key in ["headers", "sourceLabels"] {
                if let (Some(v), Some(o)) = (a.get(key), m.as_object_mut()) {
                    o.insert(key.into(), v.clone());
                }
            }
            out.push(m);
        }
    }
    out
}

/// A destination's headers that set a session affinity cookie on its answers.
fn set_cookie(value: &str) -> Value {
    json!({"response": {"add": {affinity::SET_COOKIE_HEADER: value}}})
}

/// A route of session affinity: each of its matches is on the Canary's cookie.
fn is_sticky(canary: &Canary, route: &HttpRoute) -> bool {
    !route.matches.is_empty()
        && route.matches.iter().all(|m| {
            m.get("headers")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .any(|(name, condition)| {
                    condition
                        .get("regex")
                        .and_then(Value::as_str)
                        .is_some_and(|re| affinity::is_sticky_match(canary, name, re))
                })
        })
}

fn owned(canary: &Canary, name: &str, ar: &ApiResource) -> DynamicObject {
    let mut object = DynamicObject::new(name, ar);
    object.metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: canary.namespace(),
        owner_references: canary.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    object
}

impl IstioRouter {
    fn virtual_service(
        &self,
        canary: &Canary,
        traffic: Traffic,
    ) -> Result<VirtualServiceSpec, RoutingError> {
        let service = &canary.spec.service;
        let names = ServiceNames::of(canary);
        if service.delegation && (!service.hosts.is_empty() || !service.gateways.is_empty()) {
            return Err(RoutingError::Invalid {
                canary: canary.name_any(),
                field: "spec.service.delegation".into(),
                message: "a delegate VirtualService has no hosts nor gateways: remove spec.service.hosts and spec.service.gateways".into(),
            });
        }
        let mut hosts = service.hosts.clone();
        if !hosts.iter().any(|h| *h == names.apex || h == "*") {
            hosts.push(names.apex.clone());
        }
        let mut gateways = service.gateways.clone();
        if gateways.is_empty() {
            gateways.push("mesh".into());
        }
        if service.delegation {
            hosts.clear();
            gateways.clear();
        }
        // The port goes in the destination behind an ingress gateway (or a delegate), as Flagger sets it.
        let port = (service.port_discovery
            && (service.gateways.first().is_some_and(|g| g != "mesh") || service.delegation))
            .then_some(PortSelector {
                number: service.port,
            });
        let destination = |host: &str, weight: i32| RouteDestination {
            destination: Destination {
                host: host.to_string(),
                port: port.clone(),
            },
            weight,
            headers: None,
        };
        let split = |w: Weights| {
            vec![
                destination(&names.primary, w.primary),
                destination(&names.canary, w.canary),
            ]
        };
        if is_tcp(canary) {
            let w = match traffic {
                Traffic::Split(w) => w,
                Traffic::Matched => {
                    return Err(RoutingError::Unsupported {
                        canary: canary.name_any(),
                        router: "istio",
                        field:
                            "spec.analysis.match with spec.service.appProtocol tcp (A/B needs HTTP)"
                                .into(),
                    });
                }
                Traffic::Mirrored => {
                    return Err(RoutingError::Unsupported {
                        canary: canary.name_any(),
                        router: "istio",
                        field:
                            "spec.analysis.mirror with spec.service.appProtocol tcp (mirroring needs HTTP)"
                                .into(),
                    });
                }
            };
            let matches = service
                .r#match
                .iter()
                .flatten()
                .filter_map(|m| m.get("port").map(|p| serde_json::json!({ "port": p })))
                .collect();
            return Ok(VirtualServiceSpec {
                hosts,
                gateways,
                http: vec![],
                tcp: vec![TcpRoute {
                    matches,
                    route: split(w),
                }],
            });
        }
        let service_matches = service.r#match.clone().unwrap_or_default();
        let route = |matches: Vec<Value>, route: Vec<RouteDestination>| HttpRoute {
            matches,
            // Istio's rewrite has uri and authority (`type` is Gateway API's).
            rewrite: service.rewrite.as_ref().map(|r| {
                let mut v = serde_json::Map::new();
                if let Some(uri) = &r.uri {
                    v.insert("uri".into(), uri.clone().into());
                }
                if let Some(authority) = &r.authority {
                    v.insert("authority".into(), authority.clone().into());
                }
                Value::Object(v)
            }),
            timeout: service.timeout.clone(),
            retries: service.retries.clone(),
            headers: service.headers.clone(),
            cors_policy: service.cors_policy.clone(),
            route,
            mirror: None,
            mirror_percentage: None,
        };
        let http = match traffic {
            Traffic::Split(w) => match affinity::sticky(canary, w) {
                None => vec![route(service_matches, split(w))],
                Some(sticky) => {
                    let cookie_match = |c: &affinity::Cookie| {
                        merged_matches(
                            &[json!({"headers": {affinity::COOKIE_HEADER: {"regex": c.regex()}}})],
                            &service_matches,
                        )
                    };
                    match sticky {
                        Sticky::Active {
                            canary: cc,
                            primary,
                        } => {
                            let mut weighted = split(w);
                            weighted[1].headers = Some(set_cookie(&cc.set));
                            let mut http = vec![route(
                                cookie_match(&cc),
                                split(Weights::canary(TOTAL_WEIGHT)),
                            )];
                            if let Some(pc) = primary {
                                weighted[0].headers = Some(set_cookie(&pc.set));
                                http.push(route(cookie_match(&pc), split(Weights::canary(0))));
                            }
                            http.push(route(service_matches, weighted));
                            http
                        }
                        Sticky::Ended { canary: cc, expire } => {
                            let mut expiring = route(cookie_match(&cc), split(w));
                            let mut headers = expiring.headers.take().unwrap_or_else(|| json!({}));
                            headers["response"]["add"][affinity::SET_COOKIE_HEADER] = json!(expire);
                            expiring.headers = Some(headers);
                            vec![expiring, route(service_matches, split(w))]
                        }
                    }
                }
            },
            Traffic::Mirrored => {
                let percent = super::mirror_percent(canary);
                vec![HttpRoute {
                    mirror: Some(Destination {
                        host: names.canary.clone(),
                        port: port.clone(),
                    }),
                    // Istio mirrors every request without a percentage.
                    mirror_percentage: (percent < TOTAL_WEIGHT).then_some(MirrorPercentage {
                        value: f64::from(percent),
                    }),
                    ..route(service_matches, split(Weights::canary(0)))
                }]
            }
            Traffic::Matched => {
                let analysis = canary
                    .spec
                    .active_analysis()
                    .and_then(|a| a.r#match.clone())
                    .unwrap_or_default();
                vec![
                    route(
                        merged_matches(&analysis, &service_matches),
                        split(Weights::canary(TOTAL_WEIGHT)),
                    ),
                    route(service_matches, vec![destination(&names.primary, 100)]),
                ]
            }
        };
        Ok(VirtualServiceSpec {
            hosts,
            gateways,
            http,
            tcp: vec![],
        })
    }
}

impl Router for IstioRouter {
    fn name(&self) -> &'static str {
        "istio"
    }

    fn resources(&self) -> Vec<ApiResource> {
        vec![virtual_services(), destination_rules()]
    }

    fn objects(&self, canary: &Canary) -> Vec<(ApiResource, String)> {
        let names = ServiceNames::of(canary);
        vec![
            (virtual_services(), names.apex),
            (destination_rules(), names.canary),
            (destination_rules(), names.primary),
        ]
    }

    fn desired(
        &self,
        canary: &Canary,
        traffic: Traffic,
    ) -> Result<Vec<DynamicObject>, RoutingError> {
        let names = ServiceNames::of(canary);
        let mut vs = owned(canary, &names.apex, &virtual_services());
        vs.data = serde_json::json!({ "spec": self.virtual_service(canary, traffic)? });
        let mut out = vec![vs];
        for host in [&names.canary, &names.primary] {
            let mut rule = owned(canary, host, &destination_rules());
            let mut spec = serde_json::json!({ "host": host });
            if let Some(policy) = &canary.spec.service.traffic_policy {
                spec["trafficPolicy"] = policy.clone();
            }
            rule.data = serde_json::json!({ "spec": spec });
            out.push(rule);
        }
        Ok(out)
    }

    fn handed_back(&self, canary: &Canary) -> Result<Vec<DynamicObject>, RoutingError> {
        let names = ServiceNames::of(canary);
        let mut spec = self.virtual_service(canary, Traffic::Split(Weights::canary(0)))?;
        let to_apex = vec![RouteDestination {
            destination: Destination {
                host: names.apex.clone(),
                port: None,
            },
            weight: 100,
            headers: None,
        }];
        for r in &mut spec.http {
            r.route = to_apex.clone();
        }
        for r in &mut spec.tcp {
            r.route = to_apex.clone();
        }
        let mut vs = owned(canary, &names.apex, &virtual_services());
        vs.metadata.owner_references = None;
        vs.data = serde_json::json!({ "spec": spec });
        Ok(vec![vs])
    }

    fn traffic(&self, canary: &Canary, route: &DynamicObject) -> Option<Traffic> {
        let names = ServiceNames::of(canary);
        let spec: VirtualServiceSpec =
            serde_json::from_value(route.data.get("spec")?.clone()).ok()?;
        let split = |route: &[RouteDestination]| -> Option<Weights> {
            let weight_of = |name: &str| {
                route
                    .iter()
                    .filter(|d| d.destination.host == name)
                    .map(|d| d.weight.max(0))
                    .sum::<i32>()
            };
            Weights::from_relative(
                f64::from(weight_of(&names.primary)),
                f64::from(weight_of(&names.canary)),
            )
        };
        if let Some(tcp) = spec.tcp.first() {
            return split(&tcp.route).map(Traffic::Split);
        }
        // The split is the last route; an earlier one sending the canary anything is A/B's match route
        // (session affinity's cookie routes are neither).
        let (last, earlier) = spec.http.split_last()?;
        if earlier
            .iter()
            .filter(|r| !is_sticky(canary, r))
            .any(|r| split(&r.route).is_some_and(|w| w.canary > 0))
        {
            return Some(Traffic::Matched);
        }
        let weights = split(&last.route)?;
        if weights.canary == 0 && last.mirror.as_ref().is_some_and(|m| m.host == names.canary) {
            return Some(Traffic::Mirrored);
        }
        Some(Traffic::Split(weights))
    }
}

#[cfg(test)]
mod tests;
