//! Routing: moving traffic between a Canary's primary and canary through the user's ingress or mesh
//! objects. One file per provider behind one trait; the registry says which providers Serin can drive.

pub mod gatewayapi;
pub mod kubernetes;
pub mod services;

use kube::api::{ApiResource, DynamicObject};

use crate::api::{Canary, Provider};
use crate::decision::{Traffic, Weights};

/// The routers Serin has. A provider without one is refused at the Canary, never silently ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouterKind {
    /// Gateway API HTTPRoute (gateway.networking.k8s.io/v1).
    GatewayApi,
    /// Plain Services: blue/green without traffic shifting.
    Kubernetes,
}

/// The router that drives a provider, if Serin has one yet.
pub fn router_for(provider: Provider) -> Option<RouterKind> {
    match provider {
        Provider::GatewayApi | Provider::GatewayApiV1 => Some(RouterKind::GatewayApi),
        Provider::Kubernetes => Some(RouterKind::Kubernetes),
        Provider::GatewayApiV1beta1
        | Provider::Istio
        | Provider::Linkerd
        | Provider::SmiV1alpha1
        | Provider::SmiV1alpha2
        | Provider::SmiV1alpha3
        | Provider::Nginx
        | Provider::Contour
        | Provider::Traefik
        | Provider::Gloo
        | Provider::Skipper
        | Provider::AppMesh
        | Provider::AppMeshV1beta2
        | Provider::Osm
        | Provider::Kuma
        | Provider::Knative
        | Provider::Apisix => None,
    }
}

impl RouterKind {
    pub fn router(self) -> &'static dyn Router {
        match self {
            RouterKind::GatewayApi => &gatewayapi::GatewayApiRouter,
            RouterKind::Kubernetes => &kubernetes::KubernetesRouter,
        }
    }
}

/// The Services a Canary's routes send traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNames {
    /// `<service.name or target>`: what clients call.
    pub apex: String,
    pub primary: String,
    pub canary: String,
}

impl ServiceNames {
    pub fn of(canary: &Canary) -> Self {
        let apex = canary
            .spec
            .service
            .name
            .clone()
            .unwrap_or_else(|| canary.spec.target_ref.name.clone());
        Self {
            primary: format!("{apex}-primary"),
            canary: format!("{apex}-canary"),
            apex,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoutingError {
    #[error("Canary {canary}: {field} is not supported yet by the {router} router")]
    Unsupported {
        canary: String,
        router: &'static str,
        field: String,
    },
    #[error("Canary {canary}: {field}: {message}")]
    Invalid {
        canary: String,
        field: String,
        message: String,
    },
}

/// A provider's way of moving traffic. Routers build objects; the controller applies them with server-side
/// apply under Serin's field manager and reads them back from its watch cache.
pub trait Router: Send + Sync {
    fn name(&self) -> &'static str;
    /// The kind of routing object this router writes and reads back, if any.
    fn resource(&self) -> Option<ApiResource>;
    /// The routing objects for this traffic, holding only the fields Serin owns.
    fn desired(
        &self,
        canary: &Canary,
        traffic: Traffic,
    ) -> Result<Vec<DynamicObject>, RoutingError>;
    /// The weights a routing object holds now (from the watch cache); None when it can't tell.
    fn weights(&self, canary: &Canary, route: &DynamicObject) -> Option<Weights>;
}
