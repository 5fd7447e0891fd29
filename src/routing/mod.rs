//! Routing: moving traffic between a Canary's primary and canary through the user's ingress or mesh
//! objects. One file per provider behind one trait; this registry says which providers Serin can drive.

use crate::api::Provider;

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
