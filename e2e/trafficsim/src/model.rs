//! What the simulator knows of the cluster, whatever objects it came from: routes reduced to rules of header
//! matches and weighted Service backends, and the ready pods behind each Service with their declared behaviour.

use std::collections::{BTreeMap, HashMap};

use regex::Regex;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct SimRoute {
    /// The routing provider the route came from (e.g. "gatewayapi").
    pub provider: &'static str,
    pub namespace: String,
    pub name: String,
    pub rules: Vec<SimRule>,
    /// Requests per second sent to this route.
    pub rps: f64,
    /// Kinds of requests by share of the traffic; what is left of 1.0 carries no special headers.
    pub request_mix: Vec<RequestClass>,
    /// How a request picks among the rules that match it.
    pub precedence: Precedence,
    /// The series of the proxy the route runs in (an ingress controller's, Envoy's), beside the pods'.
    /// None: only the pods' series.
    pub proxy: Option<ProxySeries>,
    /// The requests come from this many clients in turn, each keeping the cookies answers set (0: no
    /// client state).
    pub clients: u32,
}

/// Which proxy's series a route's requests are counted in, and what they need to know of its backends.
#[derive(Debug, Clone, PartialEq)]
pub enum ProxySeries {
    /// ingress-nginx's: the backends that are a canary's (it labels the requests they serve with their
    /// upstream in `canary`).
    Nginx { canaries: Vec<ServiceKey> },
    /// Contour's Envoy: a cluster per backend Service and port, `<namespace>_<service>_<port>`.
    Envoy { ports: Vec<(ServiceKey, i32)> },
    /// Traefik's: a service per backend Service and port, `<namespace>-<service>-<port>@kubernetescrd`.
    Traefik { ports: Vec<(ServiceKey, i32)> },
}

impl ProxySeries {
    /// The name the proxy gives the backend `service` in its series, if it counts it.
    pub fn backend_name(&self, service: &ServiceKey) -> Option<String> {
        let port =
            |ports: &[(ServiceKey, i32)]| ports.iter().find(|(s, _)| s == service).map(|(_, p)| *p);
        match self {
            ProxySeries::Nginx { .. } => None,
            ProxySeries::Envoy { ports } => {
                port(ports).map(|p| format!("{}_{}_{p}", service.namespace, service.name))
            }
            ProxySeries::Traefik { ports } => port(ports)
                .map(|p| format!("{}-{}-{p}@kubernetescrd", service.namespace, service.name)),
        }
    }
}

/// Which of the rules that match a request serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precedence {
    /// The one whose match names the most headers; ties go to the earlier (Gateway API).
    #[default]
    MostSpecific,
    /// The first in order (Istio's VirtualService).
    FirstMatch,
}

impl SimRoute {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.provider, self.namespace, self.name)
    }
}

#[derive(Debug, Clone)]
pub struct SimRule {
    /// Any one of these matches selects the rule; an empty list matches every request.
    pub matches: Vec<RequestMatch>,
    pub backends: Vec<WeightedBackend>,
    /// Services that get a copy of the rule's requests; their answers are dropped (not the user's).
    pub mirrors: Vec<MirrorTarget>,
    /// A `Set-Cookie` the rule adds to its answers.
    pub set_cookie: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MirrorTarget {
    pub service: ServiceKey,
    /// Percent of the rule's requests copied, in [0, 100].
    pub percent: f64,
}

/// All header conditions must hold (an empty list holds for every request).
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone)]
pub enum HeaderMatch {
    /// Header names are compared lowercased, values exactly.
    Exact {
        name: String,
        value: String,
    },
    Regex {
        name: String,
        regex: Regex,
    },
}

impl HeaderMatch {
    /// A regex matched against the whole value, as Envoy-based proxies match (RE2 full match).
    pub fn whole_value(name: &str, pattern: &str) -> Result<Self, String> {
        Regex::new(&format!("^(?:{pattern})$"))
            .map(|regex| HeaderMatch::Regex {
                name: name.to_string(),
                regex,
            })
            .map_err(|e| format!("header {name} regex {pattern:?}: {e}"))
    }

    fn holds(&self, headers: &BTreeMap<String, String>) -> bool {
        match self {
            HeaderMatch::Exact { name, value } => headers.get(name) == Some(value),
            HeaderMatch::Regex { name, regex } => {
                headers.get(name).is_some_and(|v| regex.is_match(v))
            }
        }
    }
}

impl RequestMatch {
    pub fn holds(&self, headers: &BTreeMap<String, String>) -> bool {
        self.headers.iter().all(|h| h.holds(headers))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendTarget {
    Service(ServiceKey),
    /// A backend kind the simulator does not serve (answers 500, as a gateway with an invalid backend does).
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedBackend {
    pub target: BackendTarget,
    pub weight: u32,
    /// A `Set-Cookie` added to this backend's answers.
    pub set_cookie: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequestClass {
    pub share: f64,
    /// Lowercased header name -> value (cookies go in a "cookie" header).
    pub headers: BTreeMap<String, String>,
}

/// How a pod answers, from its annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// Fraction of requests answered with a 500, in [0, 1].
    pub error_rate: f64,
    /// Mean latency in milliseconds; each request takes between 0.8x and 1.2x of it.
    pub latency_ms: f64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            latency_ms: 10.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimPod {
    pub namespace: String,
    pub name: String,
    /// The owning workload's name (the Deployment's, for its pods), as a mesh reports it.
    pub workload: String,
    pub behaviour: Behaviour,
}

/// One observation of the cluster.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub routes: Vec<SimRoute>,
    /// The ready pods selected by each Service, sorted by name.
    pub endpoints: HashMap<ServiceKey, Vec<SimPod>>,
}
