//! The words the decision core shares with the providers and the controller: traffic weights, readiness,
//! the verdict of a round of checks, the built-in checks' names, and which routers Serin has. A leaf: it
//! imports only the API types, so the arrows point one way (api <- vocabulary <- decision <- routing,
//! metrics, workload <- controller).

use crate::api::status::EvidenceStatus;
use crate::api::{CheckStatus, Provider};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not ready, and why (e.g. "1 of 3 updated replicas available").
    NotReady(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub primary: i32,
    pub canary: i32,
}

impl Weights {
    pub fn canary(canary: i32) -> Self {
        Self {
            primary: crate::api::canary::TOTAL_WEIGHT - canary,
            canary,
        }
    }

    /// The split a routing object's relative weights make, in percent (rounded half up); None when
    /// neither side has any weight (the object says nothing about the split).
    pub fn from_relative(primary: f64, canary: f64) -> Option<Self> {
        let total = primary.max(0.0) + canary.max(0.0);
        (total > 0.0).then(|| {
            let total_weight = f64::from(crate::api::canary::TOTAL_WEIGHT);
            Self::canary((canary.max(0.0) * total_weight / total).round() as i32)
        })
    }
}

/// One round of checks: the verdict, each check's result, and what the sequential judge now knows of
/// each metric compared with the primary, for the status.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRound {
    pub verdict: Checks,
    pub results: Vec<CheckStatus>,
    pub evidence: Vec<EvidenceStatus>,
}

impl From<Checks> for CheckRound {
    fn from(verdict: Checks) -> Self {
        CheckRound {
            verdict,
            results: Vec::new(),
            evidence: Vec::new(),
        }
    }
}

/// The verdict of one round of checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Checks {
    Passed,
    /// A check's value was out of range (a failed check).
    Failed {
        message: String,
    },
    /// A check had nothing to judge (no data, or its metrics server could not be reached): never a pass,
    /// never a failure; the canary holds.
    NoData {
        message: String,
    },
    /// The sequential judge proved a metric worse on the canary than on the primary: rolled back at once
    /// (the proof already holds its false-alarm rate; counting failed checks would only delay it).
    Regressed {
        message: String,
    },
    /// Nothing failed, but a metric compared with the primary has not yet proven the canary no worse than
    /// its tolerance: traffic may still grow (more traffic, more evidence), promotion waits.
    Unproven {
        message: String,
    },
}

/// One webhook call: passed when it answered 202 or less (Flagger's rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    /// The webhook's name in the analysis.
    pub name: String,
    pub passed: bool,
    /// The answer, or why there was none ("HTTP 403: closed", "timed out after 10s").
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    Split(Weights),
    /// A/B: requests matching the analysis' match go to the canary, the rest to the primary.
    Matched,
    /// Every request goes to the primary and its answer to the user; a copy (`analysis.mirrorWeight`
    /// percent of requests, default all) goes to the canary, whose answers are dropped.
    Mirrored,
}

/// The two built-in checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    RequestSuccessRate,
    RequestDuration,
}

impl Builtin {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "request-success-rate" => Some(Builtin::RequestSuccessRate),
            "request-duration" => Some(Builtin::RequestDuration),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::RequestSuccessRate => "request-success-rate",
            Builtin::RequestDuration => "request-duration",
        }
    }
}

/// The routers Serin has. A provider without one is refused at the Canary, never silently ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouterKind {
    /// Gateway API HTTPRoute (gateway.networking.k8s.io/v1), or GRPCRoute.
    GatewayApi,
    /// Gateway API HTTPRoute at v1beta1 (or GRPCRoute, v1).
    GatewayApiV1beta1,
    /// Istio VirtualService and DestinationRules (networking.istio.io/v1).
    Istio,
    /// SMI TrafficSplit v1alpha1, as Flagger drives Linkerd.
    Linkerd,
    /// SMI TrafficSplit, by API version.
    SmiV1alpha1,
    SmiV1alpha2,
    SmiV1alpha3,
    /// ingress-nginx canary Ingress (networking.k8s.io/v1).
    Nginx,
    /// Contour HTTPProxy (projectcontour.io/v1).
    Contour,
    /// Traefik TraefikService (traefik.io/v1alpha1).
    Traefik,
    /// Plain Services: blue/green without traffic shifting.
    Kubernetes,
}

impl RouterKind {
    pub const ALL: [RouterKind; 11] = [
        RouterKind::GatewayApi,
        RouterKind::GatewayApiV1beta1,
        RouterKind::Istio,
        RouterKind::Linkerd,
        RouterKind::SmiV1alpha1,
        RouterKind::SmiV1alpha2,
        RouterKind::SmiV1alpha3,
        RouterKind::Nginx,
        RouterKind::Contour,
        RouterKind::Traefik,
        RouterKind::Kubernetes,
    ];
}

impl RouterKind {
    /// Whether the router keeps users on the revision they reached (`analysis.sessionAffinity`).
    pub fn sticks(self) -> bool {
        matches!(
            self,
            RouterKind::GatewayApi | RouterKind::GatewayApiV1beta1 | RouterKind::Istio
        )
    }

    /// Whether the router can mirror requests to the canary (`analysis.mirror`).
    pub fn mirrors(self) -> bool {
        matches!(
            self,
            RouterKind::GatewayApi
                | RouterKind::GatewayApiV1beta1
                | RouterKind::Istio
                | RouterKind::Traefik
        )
    }
}

/// The router that drives a provider, if Serin has one yet.
pub fn router_for(provider: Provider) -> Option<RouterKind> {
    match provider {
        Provider::GatewayApi | Provider::GatewayApiV1 => Some(RouterKind::GatewayApi),
        Provider::GatewayApiV1beta1 => Some(RouterKind::GatewayApiV1beta1),
        Provider::Kubernetes => Some(RouterKind::Kubernetes),
        Provider::Istio => Some(RouterKind::Istio),
        Provider::Linkerd => Some(RouterKind::Linkerd),
        Provider::SmiV1alpha1 => Some(RouterKind::SmiV1alpha1),
        Provider::SmiV1alpha2 => Some(RouterKind::SmiV1alpha2),
        Provider::SmiV1alpha3 => Some(RouterKind::SmiV1alpha3),
        Provider::Nginx => Some(RouterKind::Nginx),
        Provider::Contour => Some(RouterKind::Contour),
        Provider::Traefik => Some(RouterKind::Traefik),
        Provider::Gloo
        | Provider::Skipper
        | Provider::AppMesh
        | Provider::AppMeshV1beta2
        | Provider::Osm
        | Provider::Kuma
        | Provider::Knative
        | Provider::Apisix => None,
    }
}
