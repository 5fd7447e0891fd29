//! Routing objects the simulator sends traffic through. Each provider is one file: a typed struct of the
//! fields it reads, and its reduction to a [`SimRoute`]. Adding a provider is one more file and one more line
//! in [`sources`].

pub mod grpcroute;
pub mod httpproxy;
pub mod httproute;
pub mod ingress;
pub mod traefikservice;
pub mod trafficsplit;
pub mod virtualservice;

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::cluster::{Warnings, reflect};
use crate::model::{RequestClass, SimRoute};

/// Requests per second for one route, overriding `--rps`; on a Namespace, the default of its routes.
pub const RPS_ANNOTATION: &str = "trafficsim.serin.dev/rps";
/// The mix of requests sent to one route: JSON `[{"share": 0.1, "headers": {"x-canary": "insider"}}]`; the
/// share not listed carries no special headers. Cookies are a `cookie` header.
pub const REQUEST_MIX_ANNOTATION: &str = "trafficsim.serin.dev/request-mix";
/// The route's requests come from this many clients in turn, each keeping the cookies its answers set
/// (as browsers do), for session affinity. Absent: no client state.
pub const CLIENTS_ANNOTATION: &str = "trafficsim.serin.dev/clients";

/// A routing object kind the simulator serves.
pub trait RouteObject:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// The routing provider's name, as Serin spells it.
    const PROVIDER: &'static str;
    /// The route as the simulator runs it; an error names what is wrong with the object.
    fn to_sim_route(&self, settings: RouteSettings) -> Result<SimRoute, String>;
}

/// What the simulator's own annotations say about a route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSettings {
    pub rps: f64,
    pub request_mix: Vec<RequestClass>,
    pub clients: u32,
}

impl RouteSettings {
    /// 10 requests a second, no request mix, no clients: what the routes' unit tests read objects with.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        RouteSettings {
            rps: 10.0,
            request_mix: vec![],
            clients: 0,
        }
    }

    pub fn from_annotations(meta: &ObjectMeta, default_rps: f64) -> Result<Self, String> {
        let annotations = meta.annotations.clone().unwrap_or_default();
        let rps = match annotations.get(RPS_ANNOTATION) {
            None => default_rps,
            Some(v) => parse_rps(v)?,
        };
        let request_mix = match annotations.get(REQUEST_MIX_ANNOTATION) {
            None => Vec::new(),
            Some(v) => parse_request_mix(v)
                .map_err(|e| format!("annotation {REQUEST_MIX_ANNOTATION}: {e}"))?,
        };
        let clients = match annotations.get(CLIENTS_ANNOTATION) {
            None => 0,
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("annotation {CLIENTS_ANNOTATION}: {v:?} is not a count"))?,
        };
        Ok(Self {
            rps,
            request_mix,
            clients,
        })
    }
}

fn parse_rps(v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(rps) if rps.is_finite() && rps >= 0.0 => Ok(rps),
        _ => Err(format!(
            "annotation {RPS_ANNOTATION}: {v:?} is not a rate >= 0"
        )),
    }
}

/// The rate of a route without its own annotation: its Namespace's `trafficsim.serin.dev/rps`, else
/// `--rps`. The scale benchmark sets 0 on its namespaces: it measures controllers, and thousands of routes'
/// requests and series would load the test world instead.
#[derive(Clone)]
pub struct Rates {
    namespaces: Store<Namespace>,
    fallback: f64,
}

impl Rates {
    pub fn watch(client: &Client, fallback: f64) -> Self {
        Rates {
            namespaces: reflect(Api::all(client.clone())),
            fallback,
        }
    }

    fn default_for(&self, namespace: Option<String>, warnings: &Warnings) -> f64 {
        let namespace = namespace.unwrap_or_default();
        let Some(ns) = self.namespaces.get(&ObjectRef::new(&namespace)) else {
            return self.fallback;
        };
        match ns.annotations().get(RPS_ANNOTATION).map(|v| parse_rps(v)) {
            None => self.fallback,
            Some(Ok(rps)) => rps,
            Some(Err(e)) => {
                warnings.once(
                    &format!(
                        "namespace {namespace}@{}",
                        ns.resource_version().unwrap_or_default()
                    ),
                    &format!("namespace {namespace}: {e}; its routes get --rps"),
                );
                self.fallback
            }
        }
    }
}

fn parse_request_mix(v: &str) -> Result<Vec<RequestClass>, String> {
    #[derive(Deserialize)]
    struct Class {
        share: f64,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    }
    let classes: Vec<Class> = serde_json::from_str(v)
        .map_err(|e| format!("not a JSON list of {{share, headers}}: {e}"))?;
    let total: f64 = classes.iter().map(|c| c.share).sum();
    if classes.iter().any(|c| !(0.0..=1.0).contains(&c.share)) || total > 1.0 + 1e-9 {
        return Err(format!(
            "shares must be in [0, 1] and add up to at most 1 (they add up to {total})"
        ));
    }
    Ok(classes
        .into_iter()
        .map(|c| RequestClass {
            share: c.share,
            headers: c
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        })
        .collect())
}

/// The routes of one provider, read from its watch cache.
pub type RouteSource = Box<dyn Fn(&Warnings) -> Vec<SimRoute> + Send + Sync>;

fn source<K: RouteObject>(client: &Client, rates: Rates) -> RouteSource {
    let store: Store<K> = reflect(Api::all(client.clone()));
    Box::new(move |warnings| {
        store
            .state()
            .iter()
            .filter_map(|obj| {
                let default_rps = rates.default_for(obj.namespace(), warnings);
                let settings = RouteSettings::from_annotations(obj.meta(), default_rps);
                match settings.and_then(|s| obj.to_sim_route(s)) {
                    Ok(route) => Some(route),
                    Err(e) => {
                        let who = format!(
                            "{} {}/{}",
                            K::kind(&()),
                            obj.namespace().unwrap_or_default(),
                            obj.name_any()
                        );
                        warnings.once(
                            &format!("{who}@{}", obj.resource_version().unwrap_or_default()),
                            &format!("{who} is not simulated: {e}"),
                        );
                        None
                    }
                }
            })
            .collect()
    })
}

/// Every provider the simulator serves.
pub fn sources(client: &Client, default_rps: f64) -> Vec<RouteSource> {
    let rates = Rates::watch(client, default_rps);
    vec![
        source::<httproute::HTTPRoute>(client, rates.clone()),
        source::<grpcroute::GRPCRoute>(client, rates.clone()),
        source::<virtualservice::VirtualService>(client, rates.clone()),
        source::<trafficsplit::TrafficSplit>(client, rates.clone()),
        source::<httpproxy::HTTPProxy>(client, rates.clone()),
        source::<traefikservice::TraefikService>(client, rates.clone()),
        ingress::source(client, rates),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_namespace_annotation_is_the_default_of_its_routes() {
        let (reader, mut writer) = kube::runtime::reflector::store::<Namespace>();
        for (name, rps) in [("quiet", Some("0")), ("plain", None), ("bad", Some("-1"))] {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(Namespace {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..meta(&rps.map(|v| vec![(RPS_ANNOTATION, v)]).unwrap_or_default())
                },
                ..Namespace::default()
            }));
        }
        let rates = Rates {
            namespaces: reader,
            fallback: 50.0,
        };
        let w = Warnings::default();
        let rate = |ns: &str| rates.default_for(Some(ns.into()), &w);
        assert_eq!(rate("quiet"), 0.0);
        assert_eq!(rate("plain"), 50.0);
        assert_eq!(rate("bad"), 50.0, "an invalid rate is said and --rps used");
        assert_eq!(rate("unknown"), 50.0);
        // The route's own annotation still wins.
        let own = RouteSettings::from_annotations(&meta(&[(RPS_ANNOTATION, "7")]), rate("quiet"));
        assert_eq!(own.unwrap().rps, 7.0);
    }

    #[test]
    fn defaults_without_annotations() {
        let s = RouteSettings::from_annotations(&ObjectMeta::default(), 50.0).unwrap();
        assert_eq!(
            s,
            RouteSettings {
                rps: 50.0,
                request_mix: vec![],
                clients: 0,
            }
        );
    }

    #[test]
    fn rate_and_mix_from_annotations() {
        let s = RouteSettings::from_annotations(
            &meta(&[
                (RPS_ANNOTATION, "0"),
                (
                    REQUEST_MIX_ANNOTATION,
                    r#"[{"share":0.1,"headers":{"X-Canary":"insider"}}]"#,
                ),
            ]),
            50.0,
        )
        .unwrap();
        assert_eq!(s.rps, 0.0);
        assert_eq!(
            s.request_mix[0].headers.get("x-canary").map(String::as_str),
            Some("insider")
        );
    }

    #[test]
    fn bad_annotations_are_named() {
        let e =
            RouteSettings::from_annotations(&meta(&[(RPS_ANNOTATION, "-1")]), 50.0).unwrap_err();
        assert!(e.contains(RPS_ANNOTATION), "{e}");
        let e = RouteSettings::from_annotations(
            &meta(&[(REQUEST_MIX_ANNOTATION, r#"[{"share":0.7},{"share":0.7}]"#)]),
            50.0,
        )
        .unwrap_err();
        assert!(e.contains("add up to 1.4"), "{e}");
        let e = RouteSettings::from_annotations(&meta(&[(REQUEST_MIX_ANNOTATION, "x")]), 50.0)
            .unwrap_err();
        assert!(e.contains("not a JSON list"), "{e}");
    }
}
